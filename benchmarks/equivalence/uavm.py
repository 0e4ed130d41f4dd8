"""uavm / independent / cross_attention against the UAVM authors' own classes (YuanGongND/uavm).

Why a command: the claim "these are the authors' models, layer for layer" is checked by anyone with
a checkout of their code. The script loads their ``src/models/mm_trans.py`` from the checkout given
on the command line (it never downloads anything; the file needs only torch, numpy and torchvision),
builds ``UnifiedTrans`` / ``SeperateTrans`` / ``FullAttTrans`` and avbench's counterparts at the same
sizes, and copies weights both ways:

* theirs -> avbench through avbench's authors'-checkpoint loader (``avbench.authors_checkpoint
  .map_reference``, what ``avbench eval --checkpoint`` uses), every key and shape checked;
* avbench -> theirs through the same key map read the other way (their created-but-unused tensors
  keep their own values);

then compares the logits of every modality (``a``, ``v``; ``av`` as avbench's fused column, the mean
of the two logits as their evaluation computes it; FullAttTrans on both inputs) in float32 on the CPU::

    python benchmarks/equivalence/uavm.py /path/to/uavm     # the repository root (src/models/mm_trans.py)

Training-loop comparison (their ``run.py``/``traintest.py`` vs ``--recipe reference`` over seeds) is
not part of this script: see docs/equivalence.md for what it needs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TOL = 1e-5


def load_mm_trans(checkout: Path):
    path = next((p for p in (checkout / "src" / "models" / "mm_trans.py", checkout / "models" / "mm_trans.py",
                             checkout / "mm_trans.py") if p.is_file()), None)
    if path is None:
        sys.exit(f"uavm.py: {checkout} is not a uavm checkout (no src/models/mm_trans.py)")
    # the file alone: their models/__init__.py pulls in the audio extractor (timm), not needed here
    spec = importlib.util.spec_from_file_location("uavm_mm_trans", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CLASSES = {"UnifiedTrans": "uavm", "SeperateTrans": "independent", "FullAttTrans": "cross_attention"}


def cases(full: bool):
    """(their class, N, N_s, embed, S_dim, heads, T, audio in, video in, classes)."""
    out = []
    for cls in CLASSES:
        for n, ns in ((3, 3), (0, 2), (2, 0), (0, 0), (1, 1)):
            if cls == "FullAttTrans" and ns == 0:
                continue  # their forward returns no logits without joint layers
            for e, s in ((12, 0), (8, 4)):
                out.append((cls, n, ns, e, s, 2, 5, 12, 10, 7))
    if full:  # the paper's size: width 1024, 4 heads, 3 + 3 layers, T 30, 1024-d inputs, VGGSound's 309 classes
        out += [(cls, 3, 3, 1024, 0, 4, 30, 1024, 1024, 309) for cls in CLASSES]
    return out


def compare(mm, cls, n, ns, e, s, heads, t, da, dv, c) -> float:
    from avbench.api import FeatureSpec, TaskSpec
    from avbench.authors_checkpoint import map_reference
    from avbench_strategies.uavm import UAVM, CrossAttention, Independent, UAVMConfig

    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):  # their constructors print their sizes
        theirs = getattr(mm, cls)(e, heads, n, ns, c, t, t, da, dv, s).eval()
    strat_cls = {"UnifiedTrans": UAVM, "SeperateTrans": Independent, "FullAttTrans": CrossAttention}[cls]
    ours = strat_cls(UAVMConfig(embed_dim=e, num_heads=heads, n_specific=n, n_shared=ns, s_dim=s),
                     FeatureSpec(da, dv, t), TaskSpec(c)).eval()
    g = torch.Generator().manual_seed(1)
    xa, xv = torch.randn(4, t, da, generator=g), torch.randn(4, t, dv, generator=g)

    def diff(x: torch.Tensor, y: torch.Tensor) -> float:
        d = float((x - y).abs().max())
        return d if d == d else float("inf")  # a NaN is a failure, never a max() that skips it

    def logits_diff() -> float:
        with torch.no_grad():
            if cls == "FullAttTrans":
                return diff(theirs(xa, xv), ours.predict(xa, xv))
            la, lv = theirs(xa, "a"), theirs(xv, "v")
            return max(diff(la, ours.predict(xa, None)), diff(lv, ours.predict(None, xv)),
                       diff((la + lv) / 2, ours.predict(xa, xv)))

    # theirs -> ours through the loader `avbench eval --checkpoint` uses
    ours.load_state_dict(map_reference(ours, theirs.state_dict()), strict=True)
    d1 = logits_diff()
    # fresh weights in ours -> theirs through the same key map
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    ours_to_theirs, _unused = ours.reference_key_map()
    state = theirs.state_dict()
    own = ours.state_dict()
    for k, theirs_key in ours_to_theirs.items():
        state[theirs_key] = own[k].clone()
    theirs.load_state_dict(state, strict=True)
    return max(d1, logits_diff())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkout", type=Path, help="a checkout of YuanGongND/uavm")
    ap.add_argument("--no-paper-size", action="store_true", help="skip the three paper-sized models (slower)")
    args = ap.parse_args(argv)
    mm = load_mm_trans(args.checkout)
    print(f"{'their class':<15}{'N':>3}{'N_s':>5}{'width':>7}{'S_dim':>7}{'T':>4}  max abs logit diff (a, v, av)")
    worst = 0.0
    for case in cases(not args.no_paper_size):
        d = compare(mm, *case)
        worst = max(worst, d)
        cls, n, ns, e, s, _h, t = case[:7]
        print(f"{cls:<15}{n:>3}{ns:>5}{e:>7}{s:>7}{t:>4}  {d:.2e}{'' if d <= TOL else '  > ' + format(TOL, '.0e')}")
    print(f"worst: {worst:.2e} (target <= {TOL:.0e})")
    return 0 if worst <= TOL else 1


if __name__ == "__main__":
    raise SystemExit(main())
