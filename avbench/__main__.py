"""``python -m avbench`` (also what ``torchrun -m avbench run ...`` starts on every rank)."""

import sys

from avbench.cli import main

sys.exit(main())
