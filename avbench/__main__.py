"""``python -m avbench`` (also what ``torchrun -m avbench run ...`` starts on every rank)."""

from avbench.cli import entry

entry()
