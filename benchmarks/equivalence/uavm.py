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

With ``--train WORKDIR`` it also compares training: it writes a small synth cache, exports it into
their data layout (datafile JSONs, one ``.npy`` per clip, label CSV, balanced weight file), runs
*their* ``src/run.py`` unedited once per seed in a subprocess and ``avbench run --recipe reference``
on the same cache with the same sizes, and prints both accuracy distributions (audio, video, fused)
with Welch and Mann-Whitney p-values (scipy). Their loop runs under torch 1.11's ``zero_grad``
semantics (zero-filled gradients; torch >= 2.0 sets them to None): a ``sitecustomize`` in the work
directory sets that default and seeds ``random``/``numpy``/``torch`` from the seed, nothing else::

    python benchmarks/equivalence/uavm.py /path/to/uavm --train /tmp/uavm_train --seeds 8
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


# --- training comparison ------------------------------------------------------------------------------
SHIM = """import os, random
import numpy as np
import torch

_zero_grad = torch.optim.Optimizer.zero_grad


def zero_grad(self, set_to_none=False):  # torch 1.11's default: gradients zero-filled, not None
    return _zero_grad(self, set_to_none=set_to_none)


torch.optim.Optimizer.zero_grad = zero_grad
_seed = int(os.environ.get("UAVM_SEED", "0"))
random.seed(_seed)
np.random.seed(_seed)
torch.manual_seed(_seed)
"""


def export_layout(cache_path: Path, out: Path) -> dict[str, Path]:
    """The avbench cache's train and test splits in the authors' layout (what ``avbench cache
    import-uavm`` reads, written the other way)."""
    import json

    import numpy as np

    from avbench.cache import FeatureCache
    from avbench.train.sampling import balanced_weights

    cache = FeatureCache(cache_path)
    n_classes = cache.task.num_classes
    mids = [f"c_{i}" for i in range(n_classes)]
    (out / "feat").mkdir(parents=True, exist_ok=True)
    label_csv = out / "class_labels_indices.csv"
    label_csv.write_text("index,mid,display_name\n" + "".join(f"{i},{m},class {i}\n" for i, m in enumerate(mids)))
    files = {"label_csv": label_csv}
    for name, split in (("train", cache.train_split()), ("test", cache.test_split())):
        data = []
        for i, cid in enumerate(split.ids):
            a, v = out / "feat" / f"{name}_{i}_a.npy", out / "feat" / f"{name}_{i}_v.npy"
            np.save(a, np.asarray(split.audio[i], dtype=np.float32))
            np.save(v, np.asarray(split.video[i], dtype=np.float32))
            labs = ",".join(mids[j] for j in np.flatnonzero(split.labels[i]))
            data.append({"video_id": cid, "labels": labs, "afeat": str(a), "vfeat": str(v)})
        files[name] = out / f"{name}.json"
        files[name].write_text(json.dumps({"data": data}))
        if name == "train":  # run.py reads <train json minus .json>_weight.csv
            np.savetxt(out / "train_weight.csv", balanced_weights(split.labels), delimiter=",")
    return files


THEIR_MODEL = {"uavm": "uavm", "independent": "ind_trans", "cross_attention": "full_att_trans"}


def train_compare(checkout: Path, work: Path, seeds: int, epochs: int, width: int, layers: int,
                  batch: int, lr: float, strategy: str = "uavm") -> int:
    import json
    import os
    import subprocess

    import numpy as np
    from scipy import stats

    from avbench.datasets.synth import SynthKnobs, build_synth_cache

    src = next(p for p in (checkout / "src", checkout) if (p / "run.py").is_file())
    work.mkdir(parents=True, exist_ok=True)
    # one input width for both modalities: their run.py takes a single --input_dim
    knobs = SynthKnobs(classes=4, train_clips=384, test_clips=192, steps=10, audio_dim=32, video_dim=32, snr=1.0,
                       seed=0)
    cache_path = work / "cache"
    if not (cache_path / "manifest.json").exists():
        build_synth_cache(cache_path, knobs)
    files = export_layout(cache_path, work / "layout")
    shim = work / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(SHIM)
    theirs: dict[str, list[float]] = {"audio": [], "video": [], "fusion": []}
    for seed in range(seeds):
        exp = work / f"theirs_{strategy}" / f"seed{seed}"
        result = exp / "result.csv"
        if not result.exists():
            cmd = [sys.executable, str(src / "run.py"), "--data-train", str(files["train"]),
                   "--data-val", str(files["test"]), "--label-csv", str(files["label_csv"]),
                   "--n_class", str(knobs.classes), "--model", THEIR_MODEL[strategy], "--dataset", "vggsound",
                   "--exp-dir", str(exp), "--lr", str(lr), "-b", str(batch), "-w", "0",
                   "--n-epochs", str(epochs), "--lrscheduler_start", "1", "--lrscheduler_step", "1",
                   "--lrscheduler_decay", "0.5", "--lr_adapt", "False", "--save_model", "False",
                   "--mixup", "0.5", "--bal", "bal", "--label_smooth", "0.1", "--noise", "True",
                   "--input_dim", str(knobs.audio_dim), "--embed_dim", str(width), "--num_heads", "4",
                   "--depth_i", str(layers), "--depth_s", str(layers), "--a_seq_len", str(knobs.steps),
                   "--v_seq_len", str(knobs.steps), "--feat_norm", "True", "--metrics", "acc", "--loss", "CE",
                   "--a_tr_prob", "0.5", "--n-print-steps", "1000"]
            env = {**os.environ, "PYTHONPATH": f"{shim}{os.pathsep}{src}", "UAVM_SEED": str(seed),
                   "CUDA_VISIBLE_DEVICES": ""}
            subprocess.run(cmd, cwd=src, env=env, check=True, stdout=subprocess.DEVNULL)
        last = np.atleast_2d(np.loadtxt(result, delimiter=","))[epochs - 1]
        theirs["audio"].append(float(last[0]))
        theirs["video"].append(float(last[3]))
        theirs["fusion"].append(float(last[6]))
    out = work / f"avbench_{strategy}.json"
    if not out.exists():
        from avbench.cli import main as avbench_main

        rc = avbench_main(["run", "--strategy", strategy, "--cache", str(cache_path), "--recipe", "reference",
                           "--seeds", ",".join(str(s) for s in range(seeds)), "--epochs", str(epochs),
                           "--set", f"embed_dim={width}", "--set", "num_heads=4", "--set", f"n_specific={layers}",
                           "--set", f"n_shared={layers}", "--set", f"train.lr={lr}",
                           "--set", f"train.batch_size={batch}", "--no-progress",
                           "--results-dir", str(work / f"results_{strategy}"), "--output-json", str(out)])
        if rc != 0:
            sys.exit(f"uavm.py: avbench run failed ({rc})")
    result = json.loads(out.read_text())
    # cross_attention has only the fused column here (their a / v / av are all the joint model)
    columns = [c for c in ("audio", "video", "fusion") if f"{c}/acc" in result["seeds"][0]["metrics"]]
    ours = {c: [float(s["metrics"][f"{c}/acc"]) for s in result["seeds"]] for c in columns}
    print(f"\n{strategy} vs their --model {THEIR_MODEL[strategy]}, trained on the same synth cache ({knobs.train_clips} / {knobs.test_clips} clips, {knobs.classes} classes, "
          f"T {knobs.steps}); width {width}, {layers} + {layers} layers, batch {batch}, lr {lr}, {epochs} epochs; "
          f"{seeds} seeds each")
    print(f"{'column':<8}{'their run.py':>18}{'avbench reference':>20}{'Welch p':>10}{'Mann-Whitney p':>16}")
    worst = 1.0
    for c in columns:
        a, b = np.array(theirs[c]) * 100, np.array(ours[c]) * 100
        welch = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
        mw = float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
        worst = min(worst, welch if welch == welch else 1.0, mw)
        print(f"{c:<8}{a.mean():>10.1f} +- {a.std(ddof=1):>4.1f}{b.mean():>12.1f} +- {b.std(ddof=1):>4.1f}"
              f"{welch:>10.2f}{mw:>16.2f}")
    print(f"smallest p: {worst:.2f} ({'not different at 0.05' if worst > 0.05 else 'different at 0.05'})")
    return 0 if worst > 0.05 else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkout", type=Path, help="a checkout of YuanGongND/uavm")
    ap.add_argument("--no-paper-size", action="store_true", help="skip the three paper-sized models (slower)")
    ap.add_argument("--train", type=Path, metavar="WORKDIR", help="also compare training (their run.py vs "
                    "--recipe reference) in this directory; finished runs there are reused")
    ap.add_argument("--strategy", choices=sorted(THEIR_MODEL), default="uavm",
                    help="which model --train compares (their run.py --model uavm / ind_trans / full_att_trans)")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--lr", type=float, default=1e-3)
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
    rc = 0 if worst <= TOL else 1
    if args.train is not None:
        rc = max(rc, train_compare(args.checkout, args.train, args.seeds, args.epochs, args.width, args.layers,
                                   args.batch, args.lr, args.strategy))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
