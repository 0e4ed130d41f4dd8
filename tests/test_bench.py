"""``avbench bench`` on tiny dimensions: the JSON fields exist and are sane, FLOPs match a hand count
of one Transformer layer, the batch size is never changed silently. No assertion depends on timing."""

import json

import pytest
import torch

from avbench.bench.flops import count_flops
from avbench.bench.peak import PeakMemory, matmul_rate
from avbench.bench.timing import time_rounds
from avbench.cli import main
from avbench.hardware import resolve_precision
from helpers import tiny_cache

# One shared layer of width D; with n_specific=0 each modality enters through LayerNorm + a D x D Linear
# (as the UAVM authors build it), so the model's matmuls are that projection, exactly one Transformer
# layer and the classifier.
B, T, D, C = 8, 6, 16, 5
ONE_LAYER = ["--set", f"data.steps={T}", "--set", f"data.audio_dim={D}", "--set", f"data.video_dim={D}",
             "--set", f"data.classes={C}", "--set", f"embed_dim={D}", "--set", "n_specific=0",
             "--set", "n_shared=1"]
FAST = ["--warmup", "1", "--steps", "2", "--peak-sizes", "64,128", "--peak-seconds", "0.01"]


def hand_count_train(b, t, d, c):
    """FLOPs of one training step (a multiply-add = 2 FLOPs), as torch.utils.flop_counter counts them.

    Forward: qkv 3d^2, out proj d^2, MLP 8d^2 per token -> 2 * 12 d^2 * bt; attention scores and
    weighted sum 2 * 2 t^2 d per clip; head 2 d c per clip; the batch's modality's input projection
    2 d^2 per token. Backward: every Linear needs the gradient of its input and of its weight (2x
    forward: each layer's input depends on a learned LayerNorm or positional embedding); attention
    backward is 2 gradients per batched matmul (8 t^2 d per clip; on CPU short sequences run as two
    batched matmuls, see avbench.nn.transformer).
    """
    linear = (24 + 2) * b * t * d * d
    head = 2 * b * d * c
    return 3 * linear + 4 * b * t * t * d + 8 * b * t * t * d + 3 * head


def hand_count_infer(t, d, c):
    """Per clip, fused column = the audio pass + the video pass."""
    return 2 * ((24 + 2) * t * d * d + 4 * t * t * d + 2 * d * c)


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    args = ["bench", "--strategy", "uavm", "--synthetic", "--batch-size", str(B), "--reference",
            "--full-epoch", "--output-json", str(out), *ONE_LAYER, *FAST]
    assert main(args) == 0
    return json.loads(out.read_text())


def test_bench_json_fields_are_present_and_sane(bench_json):
    r = bench_json
    assert r["strategy"] == "uavm" and r["batch_size"] == B and r["batch_size_search"] is None
    assert r["source"]["kind"] == "synthetic" and r["source"]["num_steps"] == T
    # Parameters: one Block (12 d^2 weights; biases of proj, fc1, fc2 = 6d, qkv has none; 2 LayerNorms
    # = 4d), 2 modality inputs (LayerNorm + Linear), the shared stack's LayerNorm and positions, the
    # head (LayerNorm + Linear).
    block = 12 * D * D + 6 * D + 4 * D
    inputs = 2 * (2 * D + D * D + D)
    shared = 2 * D + T * D
    head = 2 * D + D * C + C
    assert r["parameters"] == block + inputs + shared + head
    for key in ("train", "infer", "reference"):
        x = r[key]
        for f in ("clips_per_s", "step_ms_p50", "step_ms_p95", "flops_per_clip", "achieved_flops_per_s",
                  "mfu", "peak_memory_bytes"):
            assert x[f] > 0, (key, f)
        assert x["step_ms_p95"] >= x["step_ms_p50"]
        assert x["steps"] == 2 and x["memory_kind"] in ("peak_rss", "peak_rss_since_start")
    # The default precision is "auto", resolved for this machine (bf16 only where native and faster).
    assert r["precision"] == resolve_precision("auto", "cpu")[0] and r["precision_reason"].startswith("auto: ")
    assert r["train"]["precision"] == r["precision"] and r["train"]["attention"] == "bmm"  # the CPU fast path
    assert r["reference"]["precision"] == "fp32" and r["reference"]["attention"] == "reference"
    assert r["train"]["optimizer"] == "adam (fused)" and r["reference"]["optimizer"] == "adam (per-parameter loop)"
    assert r["reference"]["speedup"] == pytest.approx(r["train"]["clips_per_s"] / r["reference"]["clips_per_s"])
    assert r["infer"]["column"] == "fusion"
    # Rates of the precision trained in and of fp32 only (an emulated bf16 product takes minutes).
    assert set(r["matmul_flops_per_s"]) == {r["precision"], "fp32"} and min(r["matmul_flops_per_s"].values()) > 0
    # On CPU the denominator is sampled after every timed round (2 training rounds, 2 inference rounds).
    assert len(r["matmul_rate_samples"][r["precision"]]["during"]) == 4 and r["matmul_sizes"] == [64, 128]
    d = r["data"]
    assert d["source"] in ("device", "memmap+prefetch")
    assert d["premade_step_ms"] > 0 and d["cache_step_ms"] > 0 and d["gather_augment_ms"] > 0
    # Whole batches over the rows trained on (the training split less any validation hold-out).
    assert d["epoch"]["train_rows"] <= d["epoch"]["train_split"]
    assert d["epoch"]["clips"] == (d["epoch"]["train_rows"] // B) * B and d["epoch"]["seconds"] > 0
    assert r["train"]["mfu"] == pytest.approx(r["train"]["achieved_flops_per_s"] / r["matmul_flops_per_s"][r["precision"]])


def test_flops_match_a_hand_count_of_one_transformer_layer(bench_json):
    r = bench_json
    assert r["train"]["flops_per_step"] == hand_count_train(B, T, D, C)
    assert r["train"]["flops_per_clip"] == pytest.approx(hand_count_train(B, T, D, C) / B)
    assert r["infer"]["flops_per_clip"] == pytest.approx(hand_count_infer(T, D, C))
    # The reference attention is the same two matmuls, written out.
    assert r["reference"]["flops_per_clip"] == pytest.approx(hand_count_train(B, T, D, C) / B)


def test_cpu_attention_kernel_is_counted():
    """torch's counter alone misses CPU flash attention; ours counts it like the CUDA kernels."""
    q = torch.randn(2, 4, 8, 16, requires_grad=True)
    flops, _ = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward())
    assert flops == (2 + 5) * 2 * (2 * 4) * 8 * 8 * 16


def test_find_batch_size_searches_and_records(tmp_path):
    out = tmp_path / "b.json"
    assert main(["bench", "--strategy", "uavm", "--synthetic", "--batch-size", "4", "--find-batch-size",
                 "--max-batch-size", "32", "--mode", "train", "--no-data-path", "--output-json", str(out),
                 *ONE_LAYER, *FAST]) == 0
    r = json.loads(out.read_text())
    assert r["batch_size"] == 32 and r["train"]["batch_size"] == 32
    assert [t["batch_size"] for t in r["batch_size_search"]] == [4, 8, 16, 32]
    assert all(t["fits"] and t["peak_memory_bytes"] > 0 for t in r["batch_size_search"])
    assert "infer" not in r


def test_batch_larger_than_the_split_is_an_error_not_a_fallback(tmp_path, capsys):
    cache = tiny_cache(tmp_path / "c")
    assert main(["bench", "--strategy", "uavm", "--cache", str(cache), "--batch-size", "1000",
                 "--set", "embed_dim=16", *FAST]) == 2
    err = capsys.readouterr().err
    assert "--batch-size 1000 is larger than the train split (96 clips)" in err and "Traceback" not in err


def test_log_mlflow_records_the_figures(tmp_path):
    res = tmp_path / "res"
    assert main(["bench", "--strategy", "uavm", "--synthetic", "--batch-size", str(B), "--mode", "infer",
                 "--precision", "fp32", "--log-mlflow", "--results-dir", str(res), *ONE_LAYER, *FAST]) == 0
    from avbench.tracking import Tracker

    tr = Tracker(res)
    exp = tr.experiment_id("bench", create=False)
    runs = tr.client.search_runs([exp])
    assert len(runs) == 1
    m = runs[0].data.metrics
    assert m["infer/clips_per_s"] > 0 and m["infer/flops_per_clip"] == pytest.approx(hand_count_infer(T, D, C))
    assert {a.path for a in tr.client.list_artifacts(runs[0].info.run_id)} == {"bench.json"}
    p = runs[0].data.params
    assert p["precision"] == "fp32" and p["precision_reason"] == "fp32 as requested"
    assert "matmul_flops_per_s/fp32" in m and "matmul_flops_per_s/bf16" not in m  # only what was trained in


def test_timing_memory_and_peak_primitives():
    calls = []
    wins = time_rounds({"a": lambda i: calls.append(("a", i)) or 3, "b": lambda i: calls.append(("b", i)) or 5},
                       4, torch.device("cpu"), between=lambda: calls.append("probe"))
    assert calls[:6] == [("a", 0), ("b", 0), "probe", ("a", 1), ("b", 1), "probe"]  # interleaved rounds
    assert wins["a"].items == 12 and wins["b"].items == 20 and len(wins["a"].step_s) == 4
    assert wins["a"].wall_s == pytest.approx(sum(wins["a"].step_s))
    mem = PeakMemory("cpu")
    mem.reset()
    before = mem.read()
    x = torch.ones(256 * 2**20 // 4)  # 256 MiB, touched
    # most of it: other threads of this process (MLflow, earlier tests' pools) may free memory meanwhile
    assert mem.read() - before >= 200 * 2**20
    del x
    assert matmul_rate("cpu", "fp32", (32, 64), min_seconds=0.001, windows=1) > 0


def test_event_layers_bench_inference_receives_the_caches_onsets(tmp_path, monkeypatch):
    """``bench --strategy event_layers`` times prediction with the test split's onsets (synthetic: ~10%
    of steps), as evaluation runs it, not the no-onset fallback (every clip pooled continuously)."""
    from avbench_strategies.event_layers import EventLayers

    seen, original = [], EventLayers.predict

    def spy(self, audio, video, onsets=None):
        seen.append((self, onsets))
        return original(self, audio, video, onsets=onsets)

    monkeypatch.setattr(EventLayers, "predict", spy)
    steps = 10
    out = tmp_path / "b.json"
    assert main(["bench", "--strategy", "event_layers", "--synthetic", "--batch-size", str(B), "--mode", "infer",
                 "--precision", "fp32", "--no-data-path", "--output-json", str(out), "--set", f"data.steps={steps}",
                 "--set", f"data.audio_dim={D}", "--set", f"data.video_dim={D}", "--set", f"data.classes={C}",
                 "--set", f"embed_dim={D}", *FAST]) == 0
    assert json.loads(out.read_text())["infer"]["column"] == "fusion"
    assert len(seen) >= 3  # the FLOP count, the warm-up and the timed steps
    assert all(o is not None and tuple(o.shape) == (B, steps) and o.dtype == torch.bool for _, o in seen)
    rate = torch.stack([o for _, o in seen]).float().mean().item()
    assert 0.02 < rate < 0.3, rate  # the synthetic cache's onset rate (0.1), not all-false
    stats = seen[-1][0].onset_fallback_stats()
    assert stats["eval_clips"] > 0 and stats["eval_onset_fallback_rate"] < 1.0, stats  # 1.0 without onsets
