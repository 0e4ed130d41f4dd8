"""Throughput measurement: ``avbench bench`` (harness), timed windows (timing), FLOPs per clip
(flops), the device's matmul rate and peak memory (peak)."""

from avbench.bench.harness import BenchRequest, SyntheticSpec, log_to_mlflow, run_bench

__all__ = ["BenchRequest", "SyntheticSpec", "log_to_mlflow", "run_bench"]
