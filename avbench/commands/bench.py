"""``avbench bench``: training and inference throughput, step latency, peak memory, parameters,
FLOPs per clip and MFU of one strategy, with the data path timed separately."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="throughput, latency, memory, FLOPs and MFU of a strategy",
                       description="Benchmark one strategy's training step and inference through the engine's "
                                   "own code path: warm-up steps, then timed rounds in which the configurations "
                                   "compared (pre-made vs cached batches, fast path vs --reference) alternate "
                                   "step by step, so a shared host's changing load hits them alike.")
    p.add_argument("--strategy", required=True, help="registered name (avbench list) or package.module:Class")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="dataset card name (its cache is prepared if needed)")
    src.add_argument("--cache", help="path of a feature cache")
    src.add_argument("--synthetic", action="store_true",
                     help="random VGGSound-shaped features (T 30, 1024-d, 309 classes; change with --set data.*)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, help="training batch size (default: the recipe's)")
    p.add_argument("--find-batch-size", action="store_true",
                   help="search the largest batch that fits (doubling from --batch-size); the result records it")
    p.add_argument("--max-batch-size", type=int, default=4096, help="upper bound for --find-batch-size")
    p.add_argument("--precision", "--amp", dest="amp", choices=["auto", "bf16", "fp16", "fp32"],
                   help="autocast precision (default: the recipe's, auto: bf16 where the device computes it "
                        "natively and faster, else fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step and predict")
    p.add_argument("--mode", choices=["train", "infer", "both"], default="both")
    p.add_argument("--reference", action="store_true",
                   help="also time the reference configuration (fp32, explicit softmax attention), interleaved "
                        "step by step with the fast path")
    p.add_argument("--full-epoch", action="store_true", help="also time one whole training epoch, data included")
    p.add_argument("--no-data-path", action="store_true", help="skip timing batches from the cache")
    p.add_argument("--warmup", type=int, help="warm-up steps (default 2 on CPU, 10 on CUDA)")
    p.add_argument("--steps", type=int, help="timed steps per configuration (default 5 on CPU, 50 on CUDA)")
    p.add_argument("--stage", help="multi-stage strategies: the stage whose step is timed (default the first)")
    p.add_argument("--peak-sizes", help="comma-separated square matmul sizes for the device's rate; the best "
                                        "counts (default 1024,2048 on CPU, 8192 on CUDA)")
    p.add_argument("--peak-seconds", type=float, default=0.25, help="per timing window of the matmul rate")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="strategy, recipe (train.) or data (data.) setting; repeatable")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-json", help="write the full result as JSON here")
    p.add_argument("--log-mlflow", action="store_true", help="log the result to MLflow (experiment avbench-bench)")
    p.add_argument("--results-dir", default="results", help="MLflow location for --log-mlflow")
    p.add_argument("--cache-root", help="where generated dataset caches live (default: user cache dir)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from avbench import config as cfgmod
    from avbench.bench import BenchRequest, log_to_mlflow, run_bench
    from avbench.fsguard import check_file_options

    check_file_options(output_json=args.output_json)  # a bad output path fails before any work
    req = BenchRequest(strategy=args.strategy, dataset=args.dataset, cache=args.cache, synthetic=args.synthetic,
                       device=args.device, batch_size=args.batch_size, amp=args.amp, compile=args.compile,
                       mode=args.mode, warmup=args.warmup, steps=args.steps, find_batch_size=args.find_batch_size,
                       max_batch_size=args.max_batch_size, reference=args.reference,
                       data_path=not args.no_data_path, full_epoch=args.full_epoch, stage=args.stage,
                       overrides=cfgmod.parse_pairs(args.overrides), cache_root=args.cache_root, seed=args.seed,
                       peak_sizes=_sizes(args.peak_sizes), peak_seconds=args.peak_seconds)
    result = run_bench(req)
    if args.log_mlflow:
        result["mlflow_run_id"] = log_to_mlflow(result, args.results_dir)
    print(format_result(result))
    if args.output_json:  # the results contract: provenance, metric_info, validated (avbench/results.py)
        from avbench import results

        results.write(args.output_json, results.finalize("bench", result))
    return 0


def _sizes(text: str | None) -> tuple[int, ...] | None:
    from avbench.errors import UserError

    if not text:
        return None
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"--peak-sizes expects comma-separated integers, got '{text}'") from None
    if not sizes or min(sizes) < 1:
        raise UserError(f"--peak-sizes expects positive sizes, got '{text}'")
    return sizes


def _mib(b: float) -> str:
    return f"{b / 2**20:.0f}"


def format_result(r: dict[str, Any]) -> str:
    from tabulate import tabulate

    s = r["source"]
    lines = [f"avbench bench: {r['strategy']} ({r['parameters'] / 1e6:.2f} M parameters) on {s['kind']} "
             f"{s.get('dataset', '')} (T={s['num_steps']}, audio {s['audio_dim']}-d, video {s['video_dim']}-d, "
             f"{s['num_classes']} classes)",
             f"device: {r['device_name']}, batch {r['batch_size']}, {r['warmup_steps']} warm-up + "
             f"{r['timed_steps']} timed steps",
             f"precision: {r['precision']} ({r.get('precision_reason', '')})"]
    rows = []
    for key in ("train", "reference", "infer"):
        x = r.get(key)
        if not x:
            continue
        label = {"train": "train", "reference": "train (reference)", "infer": f"infer ({x.get('column')})"}[key]
        rows.append([label, x["precision"] + (" +compile" if x.get("compile") else ""), x.get("attention", ""),
                     f"{x['clips_per_s']:.1f}", f"{x['step_ms_p50']:.1f}", f"{x['step_ms_p95']:.1f}",
                     f"{x['flops_per_clip'] / 1e9:.3f}", f"{x['achieved_flops_per_s'] / 1e9:.1f}",
                     f"{100 * x['mfu']:.1f}", _mib(x["peak_memory_bytes"])])
    lines.append(tabulate(rows, headers=["mode", "precision", "attention", "clips/s", "step p50 ms", "step p95 ms",
                                         "GFLOP/clip", "GFLOP/s", "MFU %", "peak MiB"], tablefmt="github"))
    peaks = ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in r["matmul_flops_per_s"].items())
    how = "median of samples between timed rounds" if not r["device"].startswith("cuda") else "best of before/after"
    sizes = "/".join(str(n) for n in r["matmul_sizes"])
    lines.append(f"MFU denominator, best square matmul ({sizes}) measured in this run ({how}): {peaks}")
    if "reference" in r:
        lines.append(f"speed-up over the reference configuration (fp32, explicit softmax attention, "
                     f"{r['reference']['optimizer']}; this run's path: {r['train']['optimizer']}): "
                     f"{r['reference']['speedup']:.2f}x")
    d = r.get("data") or {}
    if "overhead_pct" in d:
        lines.append(f"data path ({d['source']}): {d['cache_step_ms']:.1f} ms/step from the cache vs "
                     f"{d['premade_step_ms']:.1f} ms pre-made ({d['overhead_pct']:+.1f}%); gather + augment "
                     f"alone {d['gather_augment_ms']:.1f} ms/batch ({d['gather_augment_pct_of_step']:.1f}% of a step)")
    if "epoch" in d:
        e = d["epoch"]
        lines.append(f"one epoch: {e['clips']} clips in {e['seconds']:.2f} s ({e['clips_per_s']:.0f} clips/s), "
                     f"data included; {d['engine_setup_s']:.2f} s before it to open the cache "
                     f"({'and copy the splits to the device' if d['source'] == 'device' else 'memmap'})")
    if r.get("batch_size_search"):
        tried = ", ".join(f"{t['batch_size']}{'' if t['fits'] else ' (no)'}" for t in r["batch_size_search"])
        lines.append(f"batch size search: {tried} -> {r['batch_size']}")
    mem_kind = (r.get("train") or r.get("infer") or {}).get("memory_kind", "")
    lines.append(f"peak memory: {mem_kind}; parameters: {r['parameters']:,} ({r['trainable_parameters']:,} trainable)")
    load = r.get("load_average") or {}
    if r["device"].startswith("cpu") and load.get("before"):
        lines.append(f"host load average (1/5/15 min) before {load['before']}, after {load['after']}")
    return "\n".join(lines)
