"""vq_codes against the CMG authors' own modules (haihuangcode/CMG ``code/src``), module by module.

Why a command: the claim "vq_codes' modules are CMG's" has to be checkable by anyone with a checkout
of the authors' code, not only stated. This script imports the authors' classes from the checkout
given on the command line (it never downloads anything), builds avbench's counterparts with the
switches at CMG's values, copies the weights one way and then the other, and prints the largest
absolute difference of every output and loss::

    python benchmarks/equivalence/cmg.py /path/to/CMG          # the repository root or code/src

Everything runs in float64 on the CPU, as the authors' scripts run in float64 (pretrain.py:311-317).
Their code calls ``.cuda()`` unconditionally; on a machine without CUDA the script makes
``Tensor.cuda`` / ``Module.cuda`` return their argument unchanged (a device redirect, no arithmetic
is replaced). ``model/main_model_2.py`` imports ``info_nce`` (PyPI ``info-nce-pytorch``, unused by
the classes compared here): install it, or pass ``--pydeps DIR`` where it is installed.

What is compared (CMG's AV classes; the video side of avbench uses the audio-style Linear encoders
on per-step vectors, so CMG's *audio* branch is the reference for both):

* semantic encoder (``InternalTemporalRelationModule``), specific encoder (``Audio_Encoder``) and
  reconstruction decoder (``Audio_Decoder``) outputs, eval mode (dropout draws cannot be matched);
* quantiser (``Cross_VQEmbeddingEMA.forward``): indices, straight-through codes, commitment loss,
  L_cmcm, and the codebook, counts and sums after one MM-EMA step (train mode);
* dead-code reset timing on a counted sequence (which code is reset at which batch);
* CLUB (``CLUBSample_group``): log-likelihood, the bound under ``club_form=cmg`` with the same
  permutation, and the estimator's parameters after 5 Adam steps;
* Cross-CPC (``Cross_CPC``, 2 LSTM layers, 1 step) loss at the same anchor;
* downstream decoder (``Semantic_Decoder``) logits;
* one whole pretraining loss composed from their modules as pretrain.py composes it, against
  vq_codes' ``training_step`` (same weights, same random draws), and the gradient of every parameter
  the main optimizer updates.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

B, T, A_DIM, W, M, C = 6, 10, 128, 256, 400, 28
TOL = 1e-5


def source_dir(path: Path) -> Path:
    for cand in (path, path / "code" / "src"):
        if (cand / "model" / "main_model_2.py").is_file():
            return cand
    sys.exit(f"cmg.py: {path} is not a CMG checkout (no model/main_model_2.py there or in code/src)")


def import_cmg(src: Path, pydeps: str | None):
    if pydeps:
        sys.path.insert(0, pydeps)
    sys.path.insert(0, str(src))
    if not torch.cuda.is_available():  # their code calls .cuda() unconditionally: keep tensors where they are
        torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
        nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    try:
        from model import main_model_2 as mm
        from model.CLUB import CLUBSample_group
        from model.CPC import Cross_CPC
    except ImportError as e:
        sys.exit(f"cmg.py: importing the authors' modules failed ({e}); install what they import "
                 "(info-nce-pytorch) or pass --pydeps")
    return mm, CLUBSample_group, Cross_CPC


def avbench_model():
    """vq_codes with every switch at the public code's value, in float64, on the audio-style shapes."""
    from avbench.api import FeatureSpec, TaskSpec
    from avbench_strategies.vq_codes import VQCodes, VQCodesConfig

    cfg = VQCodesConfig(input_norm="none", cpc_pred_init="default", ema_features="train", decoder_input="raw",
                        reset_after=300, cpc_steps=1, cpc_layers=2, ema_partner="aligned", ema_sequential=True,
                        commit_beta=0.5, club_form="cmg", reset_timing="cmg", reset_rescale_ema=False,
                        downstream_encoder="train", precision="fp64")
    return VQCodes(cfg, FeatureSpec(audio_dim=A_DIM, video_dim=A_DIM, num_steps=T),
                   TaskSpec(num_classes=C, multilabel=False)), cfg


def maxdiff(a, b) -> float:
    d = float((a.detach().double() - b.detach().double()).abs().max())
    return d if d == d else float("inf")  # a NaN is a failure, never a max() that skips it


def copy_params(dst: nn.Module, src: nn.Module, keymap: dict[str, str]) -> None:
    """``dst[keymap[k]] = src[k]`` for every key of ``src``'s state; every key of ``dst`` must be set."""
    s = src.state_dict()
    d = dst.state_dict()
    # their InternalTemporalRelationModule keeps the template layer it cloned (never run in forward)
    missing = {k for k in set(d) - set(keymap.values()) if not k.startswith("encoder_layer.")}
    assert not missing, f"keys not mapped: {sorted(missing)}"
    with torch.no_grad():
        for k, v in keymap.items():
            d[v].copy_(s[k])


def both_ways(theirs: nn.Module, ours: nn.Module, keymap: dict[str, str], compare) -> float:
    """Theirs -> ours, compare; then fresh weights in ours -> theirs, compare. The larger difference."""
    copy_params(ours, theirs, keymap)
    d1 = compare()
    torch.manual_seed(99)
    for p in ours.parameters():
        with torch.no_grad():
            p.add_(torch.randn_like(p) * 0.02)
    inverse = {v: k for k, v in keymap.items()}
    copy_params(theirs, ours, inverse)
    return max(d1, compare())


def encoder_map(n_layers: int) -> dict[str, str]:
    km = {"affine_matrix.weight": "proj.weight", "affine_matrix.bias": "proj.bias"}
    for i in range(n_layers):
        for name in ("self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
                     "self_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
                     "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"):
            km[f"encoder.layers.{i}.{name}"] = f"encoder.layers.{i}.{name}"
    return km


def run(src: Path, pydeps: str | None) -> list[tuple[str, str, float]]:
    mm, CLUBSample_group, Cross_CPC = import_cmg(src, pydeps)
    from avbench.nn.vq import code_matching_loss, commitment_loss, straight_through

    torch.manual_seed(0)
    random.seed(0)
    rows: list[tuple[str, str, float]] = []
    ours, cfg = avbench_model()
    x = torch.randn(B, T, A_DIM, dtype=torch.float64)

    # --- semantic encoder --------------------------------------------------------------------
    theirs = mm.InternalTemporalRelationModule(input_dim=A_DIM, d_model=W).double().eval()
    sem = ours.semantic["audio"].eval()
    d = both_ways(theirs, sem, encoder_map(2),
                  lambda: maxdiff(theirs(x.transpose(0, 1)).transpose(0, 1), sem(x)))
    rows.append(("semantic encoder", "output [B,T,256], eval mode", d))

    # --- specific encoder and reconstruction decoder ---------------------------------------------
    spec_t = mm.Audio_Encoder(A_DIM, W).double()
    spec_o = ours.specific["audio"]
    d = both_ways(spec_t, spec_o, {"audio_linear.weight": "0.weight", "audio_linear.bias": "0.bias"},
                  lambda: maxdiff(spec_t(x), spec_o(x)))
    rows.append(("specific encoder", "output [B,T,256]", d))
    code = torch.randn(B, T, W, dtype=torch.float64)
    spec = torch.relu(torch.randn(B, T, W, dtype=torch.float64))
    dec_t = mm.Audio_Decoder(W, A_DIM, W).double()
    dec_o = ours.recon["audio"]
    km = {"audio_linear.weight": "code.weight", "audio_linear.bias": "code.bias",
          "audio_rec.weight": "out.weight", "audio_rec.bias": "out.bias"}
    d = both_ways(dec_t, dec_o, km, lambda: maxdiff(dec_t(spec, code), dec_o(code, spec)))
    rows.append(("reconstruction decoder", "output [B,T,128]", d))
    d = both_ways(dec_t, dec_o, km, lambda: abs(float(nn.functional.mse_loss(dec_t(spec, code), x)
                                                       - nn.functional.mse_loss(dec_o(code, spec), x))))
    rows.append(("reconstruction decoder", "MSE loss", d))

    # --- quantiser: one training forward of theirs vs avbench's pieces ---------------------------
    za = torch.randn(B, T, W, dtype=torch.float64) * 0.05
    zb = torch.randn(B, T, W, dtype=torch.float64) * 0.05
    q_t = mm.Cross_VQEmbeddingEMA(M, W).double().train()
    cb = ours.codebook
    with torch.no_grad():
        for name in ("embedding", "ema_count", "ema_weight"):
            getattr(cb, name).copy_(getattr(q_t, name))
    za_t, zb_t = za.clone().requires_grad_(True), zb.clone().requires_grad_(True)
    za_o, zb_o = za.clone().requires_grad_(True), zb.clone().requires_grad_(True)
    ia, ca = cb.quantize(za_o)
    ib, cv = cb.quantize(zb_o)
    qa_o, qv_o = straight_through(za_o, ca), straight_through(zb_o, cv)
    com_o = (commitment_loss(za_o, ca, cv, cfg.commit_beta, cfg.commit_partner_ratio),
             commitment_loss(zb_o, cv, ca, cfg.commit_beta, cfg.commit_partner_ratio))
    cmcm_o = cfg.cmcm_weight * code_matching_loss(za_o, zb_o, cb.embedding)
    qa_t, qv_t, a_loss, v_loss, _, _, cmcm_t, _ = q_t(za_t, zb_t, 0)
    rows.append(("quantiser", "straight-through codes (audio, video)", max(maxdiff(qa_t, qa_o), maxdiff(qv_t, qv_o))))
    # their straight-through value z + (e - z) rounds at 1e-17: a different code is >= 1e-4 away
    differ = sum(int(((c - q.detach()).abs().reshape(-1, W).max(-1).values > 1e-9).sum())
                 for c, q in ((ca, qa_t), (cv, qv_t)))
    rows.append(("quantiser", "steps whose chosen code differs (count)", float(differ)))
    rows.append(("commitment", "loss (audio, video)", max(abs(float(a_loss - com_o[0])), abs(float(v_loss - com_o[1])))))
    rows.append(("L_cmcm", "0.5 x InfoNCE on code distributions", abs(float(cmcm_t - cmcm_o))))
    g_t = torch.autograd.grad(a_loss + v_loss + cmcm_t, (za_t, zb_t))
    g_o = torch.autograd.grad(com_o[0] + com_o[1] + cmcm_o, (za_o, zb_o))
    rows.append(("commitment + L_cmcm", "gradient into the features", max(maxdiff(g_t[0], g_o[0]), maxdiff(g_t[1], g_o[1]))))
    cb.ema_update([(za, ia, zb), (zb, ib, za)], sequential=True, partner_weight=cfg.ema_partner_weight)
    rows.append(("MM-EMA (sequential, aligned)", "codebook after one step",
                 maxdiff(q_t.embedding, cb.embedding)))
    rows.append(("MM-EMA (sequential, aligned)", "counts N and sums o after one step",
                 max(maxdiff(q_t.ema_count, cb.ema_count), maxdiff(q_t.ema_weight, cb.ema_weight))))

    # --- dead-code reset timing on a counted sequence ------------------------------------------
    rows.append(("dead-code reset", "batches at which codes reset (mismatches)", float(reset_timing(mm, ours))))

    # --- CLUB -------------------------------------------------------------------------------
    club_t = CLUBSample_group(x_dim=W, y_dim=W, hidden_size=2 * cfg.club_hidden).double()
    club_o = ours.club["audio"]
    km = {k: k for k in club_t.state_dict()}
    qx = torch.randn(B, T, W, dtype=torch.float64)
    y = torch.relu(torch.randn(B, T, W, dtype=torch.float64))
    d = both_ways(club_t, club_o, km, lambda: abs(float(club_t.loglikeli(qx, y) - club_o.log_likelihood(qx, y))))
    rows.append(("CLUB", "log-likelihood", d))

    def bound() -> float:
        torch.manual_seed(5)
        perm = torch.randperm(B)
        torch.manual_seed(5)
        return abs(float(club_t.mi_est(qx, y) - club_o.mi_estimate(qx, y, perm=perm, form="cmg")))

    rows.append(("CLUB", "bound, club_form=cmg (same permutation)", both_ways(club_t, club_o, km, bound)))
    torch.manual_seed(5)
    perm = torch.randperm(B)
    per_step = float(club_o.mi_estimate(qx, y, perm=perm, form="per_step"))
    cmg_form = float(club_o.mi_estimate(qx, y, perm=perm, form="cmg"))
    rows.append(("CLUB (not a check)", f"per_step {per_step:.4f} vs cmg {cmg_form:.4f} on these heads",
                 abs(per_step - cmg_form)))
    copy_params(club_o, club_t, km)
    from avbench.nn.club import fit_estimator

    opt_t = torch.optim.Adam(club_t.parameters(), lr=cfg.club_lr)
    opt_o = torch.optim.Adam(club_o.parameters(), lr=cfg.club_lr)
    for _ in range(cfg.club_updates):  # pretrain.py mi_first_forward, one modality
        opt_t.zero_grad()
        lld_t = -club_t.loglikeli(qx, y)
        lld_t.backward()
        opt_t.step()
    lld_o = fit_estimator(club_o, opt_o, qx, y, cfg.club_updates)[-1]
    rows.append(("CLUB estimator", f"{cfg.club_updates} Adam steps: last log-likelihood", abs(float(-lld_t - lld_o))))
    rows.append(("CLUB estimator", "parameters after the steps",
                 max(maxdiff(p, q) for p, q in zip(club_t.parameters(), club_o.parameters()))))

    # --- Cross-CPC ----------------------------------------------------------------------------
    cpc_t = Cross_CPC(W, hidden_dim=W, context_dim=W, num_layers=cfg.cpc_layers)  # float32: its LSTM state is .float()
    cpc_o = ours.cpc.float()
    km = {}
    for theirs_name, idx in (("audio_ar_lstm", 0), ("video_ar_lstm", 1)):
        for k in cpc_t.state_dict():
            if k.startswith(theirs_name + "."):
                km[k] = f"lstms.{idx}." + k[len(theirs_name) + 1:]
    for theirs_name, idx in (("audio_predictors", 0), ("video_predictors", 1)):
        for k in cpc_t.state_dict():
            if k.startswith(theirs_name + "."):
                km[k] = f"predictors.{idx}." + k[len(theirs_name) + 1:]
    fa, fv = torch.randn(B, T, W), torch.randn(B, T, W)

    def cpc_diff() -> float:
        torch.manual_seed(11)
        anchor = int(torch.randint(T - 1 - 1, size=(1,)) + 1)  # their draw: randint(T - K - min_start) + min_start
        torch.manual_seed(11)
        nce_t = cpc_t(fv, fa)[-1]
        nce_o = cpc_o([fa, fv], anchor=anchor)[0]
        return abs(float(nce_t - nce_o))

    rows.append(("Cross-CPC", "InfoNCE loss at the same anchor (float32)", both_ways(cpc_t, cpc_o, km, cpc_diff)))

    # --- downstream decoder -------------------------------------------------------------------
    sd_t = mm.Semantic_Decoder(W, C).double()
    sd_o = ours.decoder
    d = both_ways(sd_t, sd_o, {"linear.weight": "linear.weight", "linear.bias": "linear.bias",
                               "event_classifier.weight": "classifier.weight",
                               "event_classifier.bias": "classifier.bias"},
                  lambda: maxdiff(sd_t(code), sd_o(code)))
    rows.append(("downstream decoder", "logits [B,28]", d))
    rows += full_pretraining_step(mm, CLUBSample_group, Cross_CPC)
    return rows


def full_pretraining_step(mm, CLUBSample_group, Cross_CPC) -> list[tuple[str, str, float]]:
    """One whole pretraining loss, composed from their modules as pretrain.py composes it (recon +
    commitment + MI + Cross-CPC + L_cmcm, weights 1; the CLUB estimators first take their 5 steps),
    against vq_codes' ``training_step``, with the same weights and the same random draws; then the
    gradient of every parameter the main optimizer updates. Eval mode on both sides (dropout masks
    cannot be matched). Their Cross_CPC runs in float32 (its LSTM state is ``.float()``); the rest
    in float64. Both modalities go through CMG's audio-style branch (see the module docstring)."""
    from avbench.api import Batch

    torch.manual_seed(1)
    ours, cfg = avbench_model()
    ours.begin_stage("pretrain")
    ours.eval()
    mods = ("audio", "video")
    sem = {m: mm.InternalTemporalRelationModule(input_dim=A_DIM, d_model=W).double().eval() for m in mods}
    spec = {m: mm.Audio_Encoder(A_DIM, W).double() for m in mods}
    dec = {m: mm.Audio_Decoder(W, A_DIM, W).double() for m in mods}
    club = {m: CLUBSample_group(x_dim=W, y_dim=W, hidden_size=2 * cfg.club_hidden).double() for m in mods}
    quant = mm.Cross_VQEmbeddingEMA(M, W).double().eval()
    cpc = Cross_CPC(W, hidden_dim=W, context_dim=W, num_layers=cfg.cpc_layers)
    pairs = []  # (theirs, ours, keymap theirs -> ours)
    for m in mods:
        pairs += [(sem[m], ours.semantic[m], encoder_map(2)),
                  (spec[m], ours.specific[m], {"audio_linear.weight": "0.weight", "audio_linear.bias": "0.bias"}),
                  (dec[m], ours.recon[m], {"audio_linear.weight": "code.weight", "audio_linear.bias": "code.bias",
                                           "audio_rec.weight": "out.weight", "audio_rec.bias": "out.bias"}),
                  (club[m], ours.club[m], {k: k for k in club[m].state_dict()})]
    km = {}
    for theirs_name, idx in (("audio_ar_lstm", 0), ("video_ar_lstm", 1), ("audio_predictors", 0),
                             ("video_predictors", 1)):
        kind = "lstms" if "lstm" in theirs_name else "predictors"
        km.update({k: f"{kind}.{idx}." + k[len(theirs_name) + 1:] for k in cpc.state_dict()
                   if k.startswith(theirs_name + ".")})
    pairs.append((cpc, ours.cpc, km))
    for theirs, mine, keymap in pairs:  # avbench's weights into theirs
        copy_params(theirs, mine, {v: k for k, v in keymap.items()})
    with torch.no_grad():
        quant.embedding.copy_(ours.codebook.embedding)
    x = {m: torch.randn(B, T, A_DIM, dtype=torch.float64) for m in mods}
    labels = torch.nn.functional.one_hot(torch.arange(B) % C, C).double()

    torch.manual_seed(7)
    out = ours.training_step(Batch(audio=x["audio"], video=x["video"], targets=labels, labels=labels), 0)
    loss_o = out["loss"]

    torch.manual_seed(7)
    z = {m: sem[m](x[m].transpose(0, 1)).transpose(0, 1) for m in mods}
    e = {m: spec[m](x[m]) for m in mods}
    qa, qv, a_loss, v_loss, _, _, cmcm, _ = quant(z["audio"], z["video"], 0)
    q = {"audio": qa, "video": qv}
    opts = {m: torch.optim.Adam(club[m].parameters(), lr=cfg.club_lr) for m in mods}
    for _ in range(cfg.club_updates):  # mi_first_forward
        for m in mods:
            opts[m].zero_grad()
            (-club[m].loglikeli(q[m].detach(), e[m].detach())).backward()
            opts[m].step()
    # mi_second_forward; drawn audio then video as vq_codes does, so the permutations are the same
    # draws (pretrain.py draws video's first: the order of two random permutations, not arithmetic)
    mi = {m: club[m].mi_est(q[m], e[m]) for m in mods}
    nce = cpc(z["video"].float(), z["audio"].float())[-1]
    recon = {m: torch.nn.functional.mse_loss(dec[m](e[m], q[m]), x[m]) for m in mods}
    loss_t = recon["audio"] + recon["video"] + a_loss + v_loss + mi["audio"] + mi["video"] + nce + cmcm

    rows = [("full pretraining step", f"total loss ({float(loss_o):.4f})", abs(float(loss_t - loss_o)))]
    main = [(t, o, k) for t, o, k in pairs if not isinstance(t, CLUBSample_group)]
    params_t = [dict(t.named_parameters())[k] for t, o, keymap in main for k in keymap]
    params_o = [dict(o.named_parameters())[keymap[k]] for t, o, keymap in main for k in keymap]
    g_t = torch.autograd.grad(loss_t, params_t, allow_unused=True)
    g_o = torch.autograd.grad(loss_o, params_o, allow_unused=True)
    worst = 0.0
    for a, b in zip(g_t, g_o):
        if (a is None) != (b is None):
            return rows + [("full pretraining step", "gradients (one side has none)", float("inf"))]
        if a is not None:
            worst = max(worst, maxdiff(a, b))
    rows.append(("full pretraining step", f"gradients of {len(params_t)} main-optimizer tensors", worst))
    return rows


def reset_timing(mm, ours) -> int:
    """Feed both quantisers batches that use a chosen set of codes; count batches where the set of
    codes reset differs. Codes 0-3 are used on every batch; code 4 only at batch 0; code 5 at batch 50;
    the rest never. Eval mode on their side (no EMA: the codebook moves only by resets)."""
    m, n_batches = 8, 360
    torch.manual_seed(0)
    q_t = mm.Cross_VQEmbeddingEMA(m, W).double().eval()
    from avbench.nn.vq import MMEMACodebook

    cb = MMEMACodebook(m, W, reset_timing="cmg").double()
    cb.embedding.copy_(q_t.embedding)
    plain = MMEMACodebook(m, W).double()  # avbench's default timing, for contrast (not compared)
    plain.embedding.copy_(q_t.embedding)
    mismatches = 0
    for step in range(n_batches):
        use = [0, 1, 2, 3] + ([4] if step == 0 else []) + ([5] if step == 50 else [])
        idx = torch.tensor([use[i % len(use)] for i in range(T)])
        before_t = q_t.embedding.clone()
        z = before_t[idx][None].expand(1, T, W).clone()
        q_t(z, z, 0)
        reset_t = set((q_t.embedding != before_t).any(-1).nonzero().flatten().tolist())
        before_o = cb.embedding.clone()
        used = torch.bincount(idx, minlength=m) > 0
        cb.reset_dead(used, 300, 100, 1.0 / 1024, rescale_ema=False)
        reset_o = set((cb.embedding != before_o).any(-1).nonzero().flatten().tolist())
        if plain.reset_dead(used, 300, 100, 1.0 / 1024):
            print(f"  batch {step}: avbench default timing resets {plain.unused_for.eq(0).logical_and(~used).nonzero().flatten().tolist()}")
        mismatches += reset_t != reset_o
        if reset_t or reset_o:
            print(f"  batch {step}: CMG resets {sorted(reset_t)}, avbench reset_timing=cmg resets {sorted(reset_o)}")
    return mismatches


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkout", type=Path, help="a checkout of haihuangcode/CMG (root or code/src)")
    ap.add_argument("--pydeps", help="a directory with the authors' extra imports (info_nce)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = run(source_dir(args.checkout), args.pydeps)
    width = max(len(r[0]) for r in rows) + 2
    qw = max(len(r[1]) for r in rows) + 2
    print(f"{'module':<{width}}{'quantity':<{qw}}max abs diff")
    bad = 0
    for mod, what, d in rows:
        check = not mod.endswith("(not a check)")
        ok = d <= TOL if check else True
        bad += not ok
        print(f"{mod:<{width}}{what:<{qw}}{d:.2e}{'' if ok else '  > ' + format(TOL, '.0e')}")
    worst = max(d for mod, _, d in rows if not mod.endswith("(not a check)"))
    print(f"worst: {worst:.2e} (target <= {TOL:.0e}); {'all within' if not bad else f'{bad} over'}")
    return 0 if not bad else 1


if __name__ == "__main__":
    raise SystemExit(main())
