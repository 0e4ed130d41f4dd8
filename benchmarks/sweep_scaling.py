"""End-to-end sweep time: ``--jobs 1`` against ``--jobs 2`` (and optionally Ray), side by side.

Why a script and not a pytest-benchmark target: the quantity is a ratio of two whole sweeps (minutes
each), measured alternately in one process so a shared machine's load hits both alike. Each round
runs every variant once into a fresh results folder (nothing is skipped); the dataset cache is built
before the first round and not timed.

    python benchmarks/sweep_scaling.py                       # 4 points x 2 seeds of uavm on synth, 1 round
    python benchmarks/sweep_scaling.py --rounds 2 --ray --output-json sweep-scaling.json

Targets (issue 15): jobs 2 at least 1.6x faster than jobs 1 on a 2-core machine; Ray at most 2 s per
job over the same jobs run by the local executor (``--jobs 2``: a local Ray cluster of the usable
cores, two jobs at a time with the same threads; the cluster's start-up is timed separately). Per-job
overhead = (Ray sweep - local sweep) x 2 slots / jobs. The Ray executor is created outside the timed
call, the local one inside it (its worker start-up is counted against local).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

DEFAULT_GRID = "lambda_mt=0.2,0.4,0.6,0.8"  # four points of equal cost
EVAL = ("audio/", "video/", "fusion/")
METRICS: dict[str, dict[str, dict[str, float]]] = {}  # variant -> (point, seed) -> evaluation metrics


def sweep_request(args: argparse.Namespace, results: Path, warm_up: bool = False, **executor) -> object:
    from avbench import config as cfgmod
    from avbench import sweep as sw

    grid = sw.parse_grid([args.grid.split(",")[0]] if warm_up else [args.grid])
    seeds = [0] if warm_up else list(range(args.seeds))
    return sw.SweepRequest(strategies=[args.strategy], grid=grid, seeds=seeds, dataset="synth",
                           epochs=args.epochs, overrides=cfgmod.parse_pairs(args.set), results_dir=str(results),
                           progress=False, save_model=False, name="bench", **executor)


def timed_sweep(args: argparse.Namespace, root: Path, label: str, executor_obj=None, warm_up: bool = False,
                **executor) -> float:
    from avbench import sweep as sw

    results = root / label
    t0 = time.perf_counter()
    out = sw.run_sweep(sweep_request(args, results, warm_up, **executor), executor=executor_obj)
    seconds = time.perf_counter() - t0
    bad = [r for r in out if r.status != "ran"]
    if bad:
        raise SystemExit(f"{label}: {len(bad)} point(s) did not run: {bad[0].error}")
    print(f"  {label}: {seconds:.1f} s", flush=True)
    METRICS[label.rsplit("-", 1)[0]] = {f"{json.dumps(r.point)} seed {s.seed}": {k: v for k, v in s.metrics.items()
                                                                               if k.startswith(EVAL)}
                                        for r in out for s in r.seeds}
    return seconds


def timed_ray(args: argparse.Namespace, root: Path, r: int, cores: int, times: dict[str, list[float]]) -> float:
    """The same jobs as ``--jobs 2`` (two at a time, cores // 2 threads each) on a fresh local cluster;
    returns the cluster's start-up time, which is not part of the sweep's."""
    import ray

    from avbench.executor.ray_backend import RayExecutor

    t0 = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    start = time.perf_counter() - t0
    try:
        ex = RayExecutor(threads_per_job=max(1, cores // 2))
        times.setdefault("ray", []).append(timed_sweep(args, root, f"ray-{r}", executor_obj=ex))
    finally:
        ray.shutdown()
    return start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategy", default="uavm")
    ap.add_argument("--grid", default=DEFAULT_GRID)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--ray", action="store_true", help="also time the Ray executor on a local 2-CPU cluster")
    ap.add_argument("--output-json")
    args = ap.parse_args()

    from avbench import sweep as sw
    from avbench.hardware import cpu_info, usable_cpus

    cores, cpu = usable_cpus(), cpu_info().model
    n_jobs = len(sw.parse_grid([args.grid]).points()) * args.seeds
    print(f"{n_jobs} jobs ({args.strategy}, {args.grid}, {args.seeds} seed(s), {args.epochs} epoch(s)), "
          f"{cores} usable core(s), {cpu}; load average before: {os.getloadavg()[0]:.1f}", flush=True)
    times: dict[str, list[float]] = {"jobs1": [], "jobs2": []}
    ray_start = None
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        timed_sweep(args, root, "warm-up (dataset cache, imports: one job)", warm_up=True, jobs=1)
        variants = ["jobs1", "jobs2"] + (["ray"] if args.ray else [])
        for r in range(args.rounds):
            order = variants if r % 2 == 0 else variants[::-1]  # a load that drifts hits every variant alike
            print(f"round {r + 1}: {', '.join(order)}", flush=True)
            for v in order:
                if v == "ray":
                    ray_start = timed_ray(args, root, r, cores, times)
                else:
                    times[v].append(timed_sweep(args, root, f"{v}-{r}", jobs=int(v[-1])))
    best = {k: min(v) for k, v in times.items()}
    report = {"jobs": n_jobs, "cores": cores, "cpu": cpu, "load_after": os.getloadavg()[0], "times_s": times, "speedup_jobs2": best["jobs1"] / best["jobs2"]}
    print(f"jobs 2 vs jobs 1: {report['speedup_jobs2']:.2f}x faster (best of {args.rounds})")
    if "ray" in best:
        report["ray_cluster_start_s"] = ray_start
        report["ray_overhead_per_job_s"] = (best["ray"] - best["jobs2"]) * 2 / n_jobs
        print(f"ray vs local --jobs 2 (same jobs, same threads): {report['ray_overhead_per_job_s']:+.2f} s per job; "
              f"cluster start {ray_start:.1f} s (once)")
    # Same numbers? jobs1 gives one job both threads; jobs2, local-2x1 and ray give each job one thread.
    report["identical_metrics_to_jobs2"] = {k: v == METRICS["jobs2"] for k, v in METRICS.items()
                                         if k not in ("jobs2", "warm")}
    print(f"identical evaluation metrics per (point, seed) to --jobs 2: {report['identical_metrics_to_jobs2']}")
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
