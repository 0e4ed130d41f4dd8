"""The precision decision (avbench.hardware): "auto" is bf16 only where bf16 matrix products are native
and faster, fp32 elsewhere, fp16 never; explicit choices are honoured (bf16 on emulating hardware with
one warning). The capability probe and the micro-benchmark are stubbed at the module boundary, plus one
real call checked only for consistency with the hardware this machine reports."""

import json
import logging

import pytest
import torch

from avbench import hardware
from avbench.errors import UserError
from avbench.hardware import BF16_MIN_SPEEDUP, CpuInfo, resolve_precision

NATIVE = CpuInfo("Intel Xeon (AMX)", frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}))
AVX2 = CpuInfo("AMD EPYC (AVX2)", frozenset({"avx2", "fma"}))


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("AVBENCH_CACHE_DIR", str(tmp_path / "cache"))  # a benchmark cache per test
    hardware.reset()
    yield
    hardware.reset()


class Bench:
    """A stand-in for the micro-benchmark: a fixed bf16/fp32 ratio, counting calls."""

    def __init__(self, speedup):
        self.speedup, self.calls = speedup, 0

    def __call__(self, *a, **k):
        self.calls += 1
        fp32 = 100e9
        return {"size": 256, "threads": torch.get_num_threads(), "fp32_flops_per_s": fp32,
                "bf16_flops_per_s": fp32 * self.speedup, "speedup": self.speedup, "rounds": 1, "seconds": 0.1}


def stub(monkeypatch, cpu=None, speedup=None, cuda=None):
    bench = Bench(speedup if speedup is not None else 1.0)
    monkeypatch.setattr(hardware, "cpu_info", lambda: cpu)
    monkeypatch.setattr(hardware, "measure_bf16_speedup", bench)
    if cuda is not None:
        monkeypatch.setattr(hardware, "cuda_bf16_native", lambda device: cuda)
    return bench


def test_native_and_faster_cpu_gets_bf16(monkeypatch):
    bench = stub(monkeypatch, NATIVE, speedup=2.4)
    p, why = resolve_precision("auto", "cpu")
    assert p == "bf16" and bench.calls == 1
    assert "amx_bf16/avx512_bf16" in why and "2.4x the fp32 rate" in why and "240 vs 100 GFLOP/s" in why


def test_native_but_not_faster_cpu_gets_fp32(monkeypatch):
    stub(monkeypatch, NATIVE, speedup=BF16_MIN_SPEEDUP - 0.05)
    p, why = resolve_precision("auto", "cpu")
    assert p == "fp32" and "only 1.20x" in why and f"needs {BF16_MIN_SPEEDUP}x" in why


def test_emulating_cpu_gets_fp32_without_benchmarking(monkeypatch):
    bench = stub(monkeypatch, AVX2, speedup=10.0)  # the flags decide: the benchmark is not even run
    p, why = resolve_precision("auto", "cpu")
    assert p == "fp32" and bench.calls == 0
    assert "AMD EPYC (AVX2)" in why and "emulated" in why


@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "fp32")])
def test_cuda_with_and_without_bf16(monkeypatch, native, expected):
    bench = stub(monkeypatch, AVX2, cuda=(native, "Test GPU (compute capability 8.0)"))
    p, why = resolve_precision("auto", "cuda:0")
    assert p == expected and bench.calls == 0 and "Test GPU" in why
    assert resolve_precision("auto", "cuda:0")[0] != "fp16"


def test_explicit_precision_is_honoured_and_emulated_bf16_warns_once(monkeypatch, caplog):
    stub(monkeypatch, AVX2, cuda=(False, "Old GPU"))
    with caplog.at_level(logging.WARNING, logger="avbench"):
        assert resolve_precision("bf16", "cpu") == ("bf16", "bf16 as requested")
        assert resolve_precision("bf16", "cpu", refresh=True)[0] == "bf16"
        assert resolve_precision("fp16", "cuda") == ("fp16", "fp16 as requested")
        assert resolve_precision("fp32", "cpu") == ("fp32", "fp32 as requested")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]  # once, one line
    assert "no native bf16" in warnings[0] and "train.amp=auto" in warnings[0]


def test_explicit_bf16_on_native_hardware_does_not_warn(monkeypatch, caplog):
    stub(monkeypatch, NATIVE, speedup=2.0)
    with caplog.at_level(logging.WARNING, logger="avbench"):
        assert resolve_precision("bf16", "cpu")[0] == "bf16"
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_explicit_bf16_warns_where_flags_say_native_but_the_measurement_says_slow(monkeypatch, caplog):
    bench = stub(monkeypatch, NATIVE, speedup=0.03)  # e.g. torch limited to its AVX2 kernels
    assert resolve_precision("auto", "cpu")[0] == "fp32" and bench.calls == 1
    with caplog.at_level(logging.WARNING, logger="avbench"):
        assert resolve_precision("bf16", "cpu")[0] == "bf16"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "measured 0.03x the fp32 rate" in warnings[0] and bench.calls == 1


def test_unknown_precision_is_a_user_error():
    with pytest.raises(UserError, match="auto, bf16, fp16 or fp32"):
        resolve_precision("fp8", "cpu")


def test_micro_benchmark_is_cached_per_machine_and_refreshable(monkeypatch):
    bench = stub(monkeypatch, NATIVE, speedup=2.0)
    assert resolve_precision("auto", "cpu")[0] == "bf16" and bench.calls == 1
    hardware.reset()  # a new process: the file answers
    p, why = resolve_precision("auto", "cpu")
    assert (p, bench.calls) == ("bf16", 1) and "cached from" in why
    path = hardware.benchmark_path(hardware.benchmark_key(NATIVE))
    saved = json.loads(path.read_text())
    assert saved["speedup"] == 2.0 and saved["key"]["cpu_model"] == NATIVE.model
    assert saved["key"]["torch"] == torch.__version__ and saved["key"]["threads"] == torch.get_num_threads()
    hardware.reset()
    monkeypatch.setenv(hardware.REFRESH_ENV, "1")
    bench.speedup = 0.5  # e.g. a new torch build that lost the fast kernels
    assert resolve_precision("auto", "cpu")[0] == "fp32" and bench.calls == 2
    assert json.loads(path.read_text())["speedup"] == 0.5
    # Another thread count is another key: measured again.
    monkeypatch.delenv(hardware.REFRESH_ENV)
    hardware.reset()
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(old + 1)
        resolve_precision("auto", "cpu")
        assert bench.calls == 3
    finally:
        torch.set_num_threads(old)


def test_engine_resolves_auto_once_and_trains_in_it(monkeypatch, tmp_path):
    from avbench.cache.reader import FeatureCache
    from avbench.train.engine import Engine, autocast
    from avbench.train.recipe import Recipe
    from avbench_strategies.uavm import UAVM, UAVMConfig
    from helpers import tiny_cache

    assert Recipe().amp == "auto"
    cache = FeatureCache(tiny_cache(tmp_path / "c"))
    for cpu, speedup, expected in ((AVX2, 1.0, "fp32"), (NATIVE, 2.0, "bf16")):
        hardware.reset()
        stub(monkeypatch, cpu, speedup=speedup)
        model = UAVM(UAVMConfig(embed_dim=16), cache.features, cache.task)
        e = Engine(model, cache, Recipe(batch_size=16), seed=0, progress=False)
        assert e.recipe.amp == e.precision == expected and e.precision_reason.startswith("auto: ")
        with autocast(torch.device("cpu"), "auto"):  # a recipe as written resolves the same way
            y = torch.nn.functional.linear(torch.ones(2, 4), torch.ones(3, 4))
        assert y.dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)
        batch = e.make_batch(next(iter(e.train_src.iterate([e.epoch_plans(0, 0)[0].fetch]))), True, 0,
                             e.epoch_plans(0, 0)[0])
        out = e.train_step(batch, 0, e.make_optimizer())
        assert torch.isfinite(out["loss"])


def test_real_decision_is_consistent_with_the_reported_hardware():
    """Whatever this machine is: fp32 without native bf16; bf16 only with native bf16 and a measured
    speed-up of at least BF16_MIN_SPEEDUP; the measurement is recorded."""
    info = hardware.cpu_info()
    p, why = resolve_precision("auto", "cpu", refresh=True)
    assert p in ("bf16", "fp32") and why.startswith("auto: ")
    if not info.native_bf16:
        assert p == "fp32" and "emulated" in why
        return
    saved = json.loads(hardware.benchmark_path(hardware.benchmark_key(info)).read_text())
    assert saved["fp32_flops_per_s"] > 0 and saved["bf16_flops_per_s"] > 0 and saved["key"]["threads"] == torch.get_num_threads()
    assert saved["speedup"] == pytest.approx(saved["bf16_flops_per_s"] / saved["fp32_flops_per_s"])
    assert (p == "bf16") == (saved["speedup"] >= BF16_MIN_SPEEDUP)
    assert any(f in why for f in info.native_bf16)


def test_run_records_the_choice_and_its_reason(monkeypatch, tmp_path):
    """result.json, the seed's MLflow params and the summary carry the precision used and why."""
    from avbench.cli import main
    from avbench.tracking import Tracker
    from helpers import run_args

    stub(monkeypatch, AVX2)  # an AVX2-only CPU: auto must train in fp32
    res, out = tmp_path / "res", tmp_path / "run.json"
    assert main(run_args("uavm", res, "--output-json", str(out))) == 0
    summary = json.loads(out.read_text())
    assert summary["recipe"]["amp"] == "auto"  # the recipe as written; the resolved choice is per seed
    child = Tracker(res).client.get_run(summary["seeds"][0]["run_id"])
    assert child.data.params["precision"] == "fp32" and child.data.params["train.amp"] == "auto"
    assert child.data.params["precision_reason"].startswith("auto: this CPU (AMD EPYC (AVX2)) reports no native bf16")
    path = Tracker(res).client.download_artifacts(child.info.run_id, "result.json", str(tmp_path))
    result = json.loads(open(path).read())
    assert result["throughput"]["precision"] == "fp32"
    assert result["throughput"]["precision_reason"] == child.data.params["precision_reason"]
