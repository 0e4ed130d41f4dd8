"""``avbench cache info|verify PATH`` (and ``import-uavm`` when the importer is installed)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="inspect, verify or import feature caches")
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    csub.required = True
    info = csub.add_parser("info", help="print a cache's manifest summary")
    info.add_argument("path")
    info.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    info.set_defaults(func=cmd_info)
    verify = csub.add_parser("verify", help="check shapes, dtypes, NaN/Inf, labels, ids and done rows")
    verify.add_argument("path")
    verify.set_defaults(func=cmd_verify)
    try:  # subcommands contributed by other modules (the UAVM importer)
        importlib.import_module("avbench.commands.cache_import").add_parser(csub)
    except ModuleNotFoundError as e:
        if e.name != "avbench.commands.cache_import":
            raise


def cmd_info(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from avbench.cache import FeatureCache

    cache = FeatureCache(args.path)
    m = cache.manifest
    if args.json:
        print(json.dumps(m.to_json(), indent=2, sort_keys=True))
        return 0
    print(f"cache     {cache.root}")
    print(f"dataset   {m.dataset} ({m.task}, {m.num_classes} classes)")
    print(f"features  T={m.num_steps}  audio {m.audio_dim}-d  video {m.video_dim}-d  {m.dtype}")
    print(f"key       {m.key or '-'}   avbench {m.avbench_version}   schema {m.schema_version}")
    for side in ("audio", "video"):
        ext = m.extractor.get(side)
        if ext:
            print(f"{side:9} " + ", ".join(f"{k}={v}" for k, v in ext.items()))
    if m.provenance:
        print("provenance " + ", ".join(f"{k}={v}" for k, v in m.provenance.items()))
    rows = []
    for name in cache.split_names:
        s = cache.split(name)
        rows.append([name, len(s), int(s.done.sum()), int((~s.present[:, 0]).sum()),
                     int((~s.present[:, 1]).sum()), "yes" if s.onsets is not None else "no",
                     f"{s.nbytes() / 2**20:.1f}"])
    print(tabulate(rows, headers=["split", "clips", "done", "no audio", "no video", "onsets", "MiB"]))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from avbench.cache.verify import verify_cache

    problems = verify_cache(args.path)
    if problems:
        for p in problems:
            print(f"FAIL {p}")
        print(f"{len(problems)} problem(s) in {args.path}", file=sys.stderr)
        return 1
    print(f"OK {args.path}")
    return 0
