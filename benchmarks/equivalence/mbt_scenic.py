"""avbench's ``mbt`` against Scenic's own MBT (google-research/scenic, projects/mbt/model.py).

    python benchmarks/equivalence/mbt_scenic.py /path/to/scenic-checkout [--width 64 --depth 4 ...]

The checkout is the directory that holds the ``scenic`` package (a clone of google-research/scenic;
the issue's reference is commit 4a38d47). Nothing is downloaded: the script imports Scenic's
``scenic.projects.mbt.model`` from the checkout (needs ``jax``, ``flax``, ``ml_collections``,
``immutabledict`` and ``clu`` installed beside torch). Scenic's ``projects/baselines/vit.py`` imports
``tensorflow.io.gfile`` at module level, used only to read checkpoint files; when TensorFlow is not
installed the script puts an empty ``tensorflow.io.gfile`` module in ``sys.modules`` so the import
succeeds (it says so when it does). Nothing that computes is replaced.

What it proves, with every avbench switch at Scenic's value (``MBT.presets["scenic"]``;
``input_norm=false``, the adaptation's input LayerNorm that Scenic has no counterpart for):

1. the avbench parameters map one to one onto Scenic's parameter tree (every name and shape equal to
   the tree ``MBT.init`` builds);
2. avbench weights copied into Scenic: every block's output (per modality, bottleneck tokens
   included), ``encoder_norm`` and the logits agree, for ``classifier=gap`` and ``token``;
3. Scenic's own initialised weights (zero-initialised head and CLS tokens replaced by random values)
   copied into avbench: the logits agree;
4. single-modality evaluation: avbench's audio-only / video-only path against Scenic's
   single-modality model (``modality_fusion`` of one modality, model.py:339), same weights;
5. training mode with the token classifier (stochastic depth 0 so both are deterministic):
   Scenic's per-modality logits and Scenic's ``MBTClassificationModel.loss_function`` (label
   smoothing 0.3) against avbench's ``training_step`` loss on the same smoothed targets.

Prints one table of max |difference| per module/output and exits 1 if any exceeds ``--tol``
(default 1e-5). Inputs are Scenic's Conv patch embedding over 1x1 patches of one step: the
spectrogram as a ``[B, T, 1, F_a]`` image, RGB as a ``[B, T, 1, 1, F_v]`` video (a 1x1x1 3-D patch),
which is exactly avbench's per-step Linear.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import types
from pathlib import Path

import numpy as np

# Scenic's modalities in avbench's names; the order of ``modality_fusion`` in Scenic's MBT-base config.
SCENIC_NAME = {"audio": "spectrogram", "video": "rgb"}
FUSION_ORDER = ("spectrogram", "rgb")


def _suffix(modality: str) -> str:
    """Scenic names rgb's parameters plainly and the spectrogram's with a suffix."""
    return "" if SCENIC_NAME[modality] == "rgb" else "_spectrogram"


def to_scenic(state: dict, cfg, modalities=("audio", "video")) -> dict:
    """avbench ``MBT`` state dict (numpy arrays) -> Scenic's ``params`` tree for the same model.

    Only the given modalities' towers are included (Scenic's single-modality model has one).
    Requires ``encoder_norm=shared`` (Scenic has one ``encoder_norm``).
    """
    if cfg.encoder_norm != "shared":
        raise ValueError("Scenic has one encoder_norm over the concatenated tokens: use encoder_norm=shared")
    d = cfg.embed_dim
    h = _heads(cfg)
    hd = d // h
    p: dict = {}
    single = len(modalities) == 1
    for m in modalities:
        w, b = state[f"patch_embed.{m}.weight"], state[f"patch_embed.{m}.bias"]
        if SCENIC_NAME[m] == "spectrogram":
            p["embedding_spectrogram"] = {"kernel": w.T.reshape(1, 1, w.shape[1], d), "bias": b}
        else:
            p["embedding"] = {"kernel": w.T.reshape(1, 1, 1, w.shape[1], d), "bias": b}
        if cfg.classifier == "token":
            name = "cls" if (SCENIC_NAME[m] == "rgb" or single) else "cls" + SCENIC_NAME[m]
            p[name] = state[f"cls.{m}"]
    p["bottleneck"] = state["bottleneck"]
    tr: dict = {}
    for m in modalities:
        tr["posembed_input" + _suffix(m)] = {"pos_embedding": state[f"pos.{m}"]}
        for i in range(cfg.depth):
            k = f"blocks.{m}.{i}."
            qkv_w, qkv_b = state[k + "attn.qkv.weight"], state.get(k + "attn.qkv.bias")
            att = {}
            for j, name in enumerate(("query", "key", "value")):
                wj = qkv_w[j * d:(j + 1) * d]  # [out D, in D], out = (head, head_dim)
                att[name] = {"kernel": wj.T.reshape(d, h, hd),
                             "bias": (qkv_b[j * d:(j + 1) * d] if qkv_b is not None else np.zeros(d)).reshape(h, hd)}
            att["out"] = {"kernel": state[k + "attn.proj.weight"].T.reshape(h, hd, d), "bias": state[k + "attn.proj.bias"]}
            tr[f"encoderblock_{i}" + _suffix(m)] = {
                "LayerNorm_0": {"scale": state[k + "norm1.weight"], "bias": state[k + "norm1.bias"]},
                "MultiHeadDotProductAttention_0": att,
                "LayerNorm_1": {"scale": state[k + "norm2.weight"], "bias": state[k + "norm2.bias"]},
                "MlpBlock_0": {"Dense_0": {"kernel": state[k + "mlp.fc1.weight"].T, "bias": state[k + "mlp.fc1.bias"]},
                               "Dense_1": {"kernel": state[k + "mlp.fc2.weight"].T, "bias": state[k + "mlp.fc2.bias"]}},
            }
    tr["encoder_norm"] = {"scale": state["norm.weight"], "bias": state["norm.bias"]}
    p["Transformer"] = tr
    p["output_projection"] = {"kernel": state["head.weight"].T, "bias": state["head.bias"]}
    return p


def from_scenic(params: dict, cfg, state: dict) -> dict:
    """Scenic ``params`` -> avbench state dict (numpy), both towers; ``state`` gives the names to fill
    (the avbench model's own state dict, whose non-Scenic entries, e.g. the input norms, are kept)."""
    d = cfg.embed_dim
    out = dict(state)
    for m in ("audio", "video"):
        emb = params["embedding_spectrogram" if SCENIC_NAME[m] == "spectrogram" else "embedding"]
        out[f"patch_embed.{m}.weight"] = emb["kernel"].reshape(-1, d).T
        out[f"patch_embed.{m}.bias"] = emb["bias"]
        if cfg.classifier == "token":
            out[f"cls.{m}"] = params["cls" if SCENIC_NAME[m] == "rgb" else "cls" + SCENIC_NAME[m]]
        tr = params["Transformer"]
        out[f"pos.{m}"] = tr["posembed_input" + _suffix(m)]["pos_embedding"]
        for i in range(cfg.depth):
            k, blk = f"blocks.{m}.{i}.", tr[f"encoderblock_{i}" + _suffix(m)]
            att = blk["MultiHeadDotProductAttention_0"]
            out[k + "attn.qkv.weight"] = np.concatenate([att[n]["kernel"].reshape(d, d).T
                                                         for n in ("query", "key", "value")])
            out[k + "attn.qkv.bias"] = np.concatenate([att[n]["bias"].reshape(d) for n in ("query", "key", "value")])
            out[k + "attn.proj.weight"] = att["out"]["kernel"].reshape(d, d).T
            out[k + "attn.proj.bias"] = att["out"]["bias"]
            for ln, name in (("LayerNorm_0", "norm1"), ("LayerNorm_1", "norm2")):
                out[k + name + ".weight"], out[k + name + ".bias"] = blk[ln]["scale"], blk[ln]["bias"]
            for dense, name in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
                out[k + f"mlp.{name}.weight"] = blk["MlpBlock_0"][dense]["kernel"].T
                out[k + f"mlp.{name}.bias"] = blk["MlpBlock_0"][dense]["bias"]
    out["bottleneck"] = params["bottleneck"]
    out["norm.weight"] = params["Transformer"]["encoder_norm"]["scale"]
    out["norm.bias"] = params["Transformer"]["encoder_norm"]["bias"]
    out["head.weight"] = params["output_projection"]["kernel"].T
    out["head.bias"] = params["output_projection"]["bias"]
    return out


def _heads(cfg) -> int:
    return cfg.num_heads if cfg.num_heads is not None else max(1, cfg.embed_dim // 64)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) or hasattr(v, "items"):
            out.update(_flat(dict(v), f"{prefix}{k}/"))
        else:
            out[prefix + k] = np.asarray(v)
    return out


def import_scenic(checkout: Path):
    """Import Scenic's MBT module from ``checkout``; an empty ``tensorflow.io.gfile`` when TF is absent."""
    if not (checkout / "scenic" / "projects" / "mbt" / "model.py").is_file():
        sys.exit(f"{checkout}: no scenic/projects/mbt/model.py (pass the directory that holds the scenic package)")
    sys.path.insert(0, str(checkout))
    stubbed = False
    try:
        importlib.import_module("tensorflow")
    except ImportError:
        tf, io, gfile = (types.ModuleType(n) for n in ("tensorflow", "tensorflow.io", "tensorflow.io.gfile"))
        tf.io, io.gfile = io, gfile
        sys.modules.update({"tensorflow": tf, "tensorflow.io": io, "tensorflow.io.gfile": gfile})
        stubbed = True
    model = importlib.import_module("scenic.projects.mbt.model")
    if stubbed:
        print("note: tensorflow is not installed; an empty tensorflow.io.gfile module stands in for the import "
              "in scenic/projects/baselines/vit.py (checkpoint file reading only, unused here)")
    return model


def float64_logits(model, audio, video):
    """The model's logits in float64 on a copy (exact softmax attention): the answer float32 rounds."""
    import copy

    import torch

    from avbench.nn import set_fused_attention

    exact = copy.deepcopy(model).double()
    set_fused_attention(exact, False)
    with torch.no_grad():
        return exact.predict(None if audio is None else audio.double(), None if video is None else video.double()).numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkout", type=Path, help="directory holding Scenic's `scenic` package")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--fusion-layer", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=3)
    ap.add_argument("--classes", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--float64", action="store_true",
                    help="both sides in float64 (jax x64; avbench's reference attention path, whose softmax "
                         "runs in the input dtype): separates rounding from a difference in the computation")
    args = ap.parse_args(argv)

    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    scenic_mbt = import_scenic(args.checkout.resolve())
    import jax
    import jax.numpy as jnp
    import ml_collections
    import torch

    from avbench.api import FeatureSpec, TaskSpec
    from avbench_strategies.mbt import MBT, MBTConfig

    jax.config.update("jax_default_matmul_precision", "highest")
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    npdt = np.float64 if args.float64 else np.float32
    jdt = jnp.float64 if args.float64 else jnp.float32
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    fa, fv = 10, 12
    feats = FeatureSpec(audio_dim=fa, video_dim=fv, num_steps=args.steps)
    task = TaskSpec(num_classes=args.classes)
    audio = rng.standard_normal((args.batch, args.steps, fa)).astype(npdt)
    video = rng.standard_normal((args.batch, args.steps, fv)).astype(npdt)
    rows: list[tuple[str, str, float, float]] = []

    def scenic_model(classifier: str, fusion: tuple[str, ...], sd: float = 0.3):
        if classifier == "gap" and len(fusion) > 1:
            return gap_model(sd)
        return scenic_mbt.MBT(
            mlp_dim=4 * args.width, num_layers=args.depth, num_heads=args.heads, num_classes=args.classes,
            patches=ml_collections.ConfigDict({"size": [1, 1, 1]}), hidden_size=args.width,
            temporal_encoding_config=ml_collections.ConfigDict({"method": "3d_conv"}),
            attention_config=ml_collections.ConfigDict({"type": "spacetime"}),
            representation_size=None, dropout_rate=0.0, attention_dropout_rate=0.0,
            stochastic_droplayer_rate=sd, classifier=classifier, modality_fusion=fusion,
            fusion_layer=args.fusion_layer, use_bottleneck=len(fusion) > 1, n_bottlenecks=4,
            test_with_bottlenecks=True, share_encoder=False, dtype=jdt)

    def gap_model(sd: float):
        """Scenic's ``MBT.__call__`` for ``classifier='gap'`` with bottlenecks. At 4a38d47 that path
        raises UnboundLocalError (model.py:463-477 set ``n``, ``c`` and the bottleneck dtype only for
        the token classifier), so its lines are transcribed here around Scenic's own
        ``temporal_encode`` and ``Encoder``; parameter names are Scenic's."""
        import flax.linen as fnn

        class GapMBT(fnn.Module):
            @fnn.compact
            def __call__(self, x, *, train: bool):
                for mod in FUSION_ORDER:
                    x[mod], _ = scenic_mbt.temporal_encode(
                        x[mod], mod, ml_collections.ConfigDict({"method": "3d_conv"}),
                        ml_collections.ConfigDict({"size": [1, 1, 1]}), args.width)
                n, _, c = x[FUSION_ORDER[0]].shape
                bottleneck = self.param("bottleneck", fnn.initializers.normal(stddev=0.02), (1, 4, c), jdt)
                bottleneck = jnp.tile(bottleneck, [n, 1, 1])
                enc = scenic_mbt.Encoder(
                    modality_fusion=FUSION_ORDER, fusion_layer=args.fusion_layer, mlp_dim=4 * args.width,
                    num_layers=args.depth, num_heads=args.heads, dropout_rate=0.0, attention_dropout_rate=0.0,
                    stochastic_droplayer_rate=sd, use_bottleneck=True, test_with_bottlenecks=True,
                    share_encoder=False, dtype=jdt, name="Transformer")(x, bottleneck, train=train)
                pooled = jnp.mean(enc, axis=list(range(1, enc.ndim - 1)))  # model.py:506-507
                return fnn.Dense(args.classes, kernel_init=fnn.initializers.zeros, name="output_projection")(pooled)

        return GapMBT()

    def scenic_inputs(mods=("audio", "video")) -> dict:
        x = {}
        if "audio" in mods:
            x["spectrogram"] = jnp.asarray(audio[:, :, None, :])  # [B, T, 1, F]: a T x 1 image
        if "video" in mods:
            x["rgb"] = jnp.asarray(video[:, :, None, None, :])  # [B, T, 1, 1, F]: T frames of 1 x 1
        return x

    def avbench_model(classifier: str) -> MBT:
        cfg = MBTConfig(embed_dim=args.width, depth=args.depth, fusion_layer=args.fusion_layer,
                        num_heads=args.heads, input_norm=False, **{**MBT.presets["scenic"], "classifier": classifier})
        m = MBT(cfg, feats, task)
        with torch.no_grad():  # zero-initialised head and CLS tokens would hide differences: randomise
            m.head.weight.normal_(0, 0.5)
            m.head.bias.normal_(0, 0.5)
            if m.cls is not None:
                for p in m.cls.values():
                    p.normal_(0, 0.5)
            for name, p in m.named_parameters():  # LayerNorm scales/shifts away from 1/0
                if "norm" in name:
                    p.add_(torch.randn_like(p) * 0.1)
        if args.float64:
            from avbench.nn import set_fused_attention

            m.double()
            set_fused_attention(m, False)
        return m.eval()

    def diff(a, b) -> tuple[float, float]:
        """(max |a - b|, max |a|): the difference and the size of the reference output."""
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        return float(np.max(np.abs(a - b))), float(np.max(np.abs(a)))

    ta, tv = torch.from_numpy(audio), torch.from_numpy(video)
    floor: list[tuple[str, str, float, float]] = []  # each side's float32 rounding of some logits
    within: list[tuple[str, str, float, float]] = []  # (classifier, logits, avbench-Scenic diff, sum of roundings)

    def rounding(classifier: str, what: str, exact, logits_a, logits_s) -> None:
        """Each side's distance from the float64 answer, and whether their difference is within the sum."""
        da, ds = diff(exact, logits_a), diff(exact, logits_s)
        floor.extend([(classifier, f"avbench float32, {what}", *da), (classifier, f"Scenic float32, {what}", *ds)])
        within.append((classifier, what, diff(logits_s, logits_a)[0], da[0] + ds[0]))
    for classifier in ("gap", "token"):
        model = avbench_model(classifier)
        cfg = model.cfg
        state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        net = scenic_model(classifier, FUSION_ORDER)
        init = net.init(jax.random.PRNGKey(args.seed), scenic_inputs(), train=False)["params"]
        init = jax.tree_util.tree_map(lambda v: np.asarray(v, dtype=npdt), init)
        params = to_scenic(state, cfg)
        # 1. key map: the same names and shapes as Scenic's own tree
        want = {k: v.shape for k, v in _flat(jax.device_get(init)).items()}
        got = {k: v.shape for k, v in _flat(params).items()}
        if want != got:
            missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
            bad = sorted(k for k in set(want) & set(got) if want[k] != got[k])
            sys.exit(f"[{classifier}] parameter trees differ: missing {missing} extra {extra} shapes {bad}")
        rows.append((classifier, f"parameter tree ({len(want)} arrays)", 0.0, 0.0))
        # 2. avbench -> Scenic, module by module
        logits_s, inter = net.apply({"params": params}, scenic_inputs(), train=False,
                                    capture_intermediates=True, mutable=["intermediates"])
        inter = inter["intermediates"]
        block_out: dict[str, list] = {}
        hooks = [blk.register_forward_hook(lambda mod, inp, out, key=f"{m}.{i}", store=block_out: store.setdefault(key, []).append(out))
                 for m in ("audio", "video") for i, blk in enumerate(model.blocks[m])]
        with torch.no_grad():
            tokens = model.encode(ta, tv)
            logits_a = model.predict(ta, tv).numpy()
        for hk in hooks:
            hk.remove()
        tr = inter["Transformer"]
        for i in range(args.depth):
            for m in ("audio", "video"):
                s_out = tr[f"encoderblock_{i}" + _suffix(m)]["__call__"][0]
                rows.append((classifier, f"encoderblock_{i}{_suffix(m)}", *diff(s_out, block_out[f"{m}.{i}"][0])))
        # avbench's (audio, video) is Scenic's concatenation order (spectrogram, rgb)
        enc = np.concatenate([tokens[m].numpy() for m in ("audio", "video")], axis=1)
        rows.append((classifier, "encoder_norm", *diff(tr["encoder_norm"]["__call__"][0], enc)))
        rows.append((classifier, "logits (avbench -> Scenic)", *diff(logits_s, logits_a)))
        if not args.float64:  # each side's own float32 rounding, against the float64 answer of the same weights
            rounding(classifier, "fused", float64_logits(model, ta, tv), logits_a, logits_s)
        # 3. Scenic's initialised weights -> avbench
        init = jax.tree_util.tree_map(np.asarray, jax.device_get(init))
        init = _flat(init)
        r2 = np.random.default_rng(args.seed + 1)
        for k in list(init):  # zero-initialised head and CLS tokens: random, else every logit is 0
            if k.startswith("output_projection/") or k.startswith("cls"):
                init[k] = r2.standard_normal(init[k].shape).astype(npdt) * 0.5
        tree: dict = {}
        for k, v in init.items():
            node = tree
            *parents, leaf = k.split("/")
            for pth in parents:
                node = node.setdefault(pth, {})
            node[leaf] = v
        back = avbench_model(classifier)
        back.load_state_dict({k: torch.tensor(np.array(v)) for k, v in from_scenic(tree, cfg, state).items()})
        with torch.no_grad():
            logits_b = back.predict(ta, tv).numpy()
        rows.append((classifier, "logits (Scenic init -> avbench)", *diff(net.apply({"params": tree}, scenic_inputs(),
                                                                                   train=False), logits_b)))
        # 4. single-modality evaluation against Scenic's single-modality model (no bottlenecks)
        for m in ("audio", "video"):
            single = scenic_model(classifier, (SCENIC_NAME[m],))
            p1 = to_scenic(state, cfg, modalities=(m,))
            s1 = single.apply({"params": p1}, scenic_inputs((m,)), train=False)
            inputs = (ta if m == "audio" else None, tv if m == "video" else None)
            with torch.no_grad():
                a1 = model.predict(*inputs).numpy()
            rows.append((classifier, f"{m}-only logits (Scenic single-modality model)", *diff(s1, a1)))
            if not args.float64:
                rounding(classifier, f"{m}-only", float64_logits(model, *inputs), a1, s1)
        # 5. training mode, token classifier: per-modality logits and Scenic's loss
        if classifier == "token":
            net0 = scenic_model(classifier, FUSION_ORDER, sd=0.0)
            out = net0.apply({"params": params}, scenic_inputs(), train=True, rngs={"dropout": jax.random.PRNGKey(0)})
            model.cfg.stochastic_depth = 0.0
            model.drop_rates = [0.0] * args.depth
            model.train()
            with torch.no_grad():
                per = model.modality_logits(ta, tv)
                for m in ("audio", "video"):
                    rows.append((classifier, f"train-mode {m} logits", *diff(out[SCENIC_NAME[m]], per[m].numpy())))
                labels = np.eye(args.classes, dtype=npdt)[rng.integers(0, args.classes, args.batch)]
                ls = 0.3
                config = ml_collections.ConfigDict({"label_smoothing": ls, "model": {}})
                cls_model = scenic_mbt.MBTClassificationModel.__new__(scenic_mbt.MBTClassificationModel)
                cls_model.config, cls_model.dataset_meta_data = config, {"target_is_onehot": True}
                loss_s = cls_model.loss_function(out, {"label": {k: jnp.asarray(labels) for k in out}})
                targets = torch.from_numpy(labels * (1 - ls) + ls / args.classes)  # avbench "uniform" smoothing
                from avbench.api import Batch
                loss_a = model.training_step(Batch(ta, tv, targets, torch.from_numpy(labels)), 0)["loss"]
                rows.append((classifier, "train-mode loss (label smoothing 0.3)", *diff(loss_s, loss_a.numpy())))

    width = max(len(r[1]) for r in rows)
    print(f"avbench mbt vs Scenic MBT ({args.checkout}); width {args.width}, depth {args.depth}, "
          f"fusion layer {args.fusion_layer}, {args.heads} heads, T {args.steps}, batch {args.batch}, "
          f"{'float64' if args.float64 else 'float32'}; "
          f"avbench switches: {dict(MBT.presets['scenic'])}, input_norm=False")
    print(f"| classifier | {'module / output'.ljust(width)} | max abs diff | max abs Scenic |")
    print(f"|---|{'-' * (width + 2)}|---|---|")
    for c, name, d, ref in rows:
        print(f"| {c:<10} | {name.ljust(width)} | {d:.2e} | {ref:.2e} |")
    worst = max(r[2] for r in rows)
    print(f"worst {worst:.2e}; tolerance {args.tol:.0e}: {'PASS' if worst <= args.tol else 'FAIL'}")
    if floor:
        print("\nfloat32 rounding floor: each side's logits against the float64 answer of the same weights "
              "(avbench in float64 with the exact attention path; equal to Scenic's float64 to ~1e-13 "
              "by --float64)")
        print(f"| classifier | {'side'.ljust(width)} | max abs diff | max abs logit |")
        print(f"|---|{'-' * (width + 2)}|---|---|")
        for c, name, d, ref in floor:
            print(f"| {c:<10} | {name.ljust(width)} | {d:.2e} | {ref:.2e} |")
        for c, what, d, bound in within:
            print(f"{c} {what} logits, avbench -> Scenic: {d:.2e} {'within' if d <= bound else 'BEYOND'} the sum "
                  f"of the two sides' rounding ({bound:.2e})")
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
