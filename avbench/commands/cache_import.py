"""``avbench cache import-uavm``: the UAVM authors' released features into a cache (avbench/cache/import_uavm.py)."""

from __future__ import annotations

import argparse


def add_parser(csub: argparse._SubParsersAction) -> None:
    p = csub.add_parser("import-uavm", help="import the UAVM authors' released per-clip features",
                        description="Turn the UAVM authors' datafile JSONs and per-clip .npy features into an "
                                    "avbench cache (JSON row order kept; resumable).")
    p.add_argument("--train-json", required=True, help='training datafile {"data": [{"labels", "afeat", "vfeat"}]}')
    p.add_argument("--test-json", required=True, help="test datafile, same format")
    p.add_argument("--labels", required=True, help="class_labels_indices.csv (index,mid,display_name)")
    p.add_argument("--out", required=True, help="cache directory to write")
    p.add_argument("--weights-csv", help="the authors' balanced-sampling weights (one per line) to check against")
    p.add_argument("--dataset", help="dataset name recorded in the cache (default: vggsound for 309 classes, "
                                     "audioset for 527)")
    p.add_argument("--feature-root", help="folder that relative afeat/vfeat paths are relative to")
    p.add_argument("--workers", type=int, default=8, help="threads reading feature files")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_import_uavm)


def cmd_import_uavm(args: argparse.Namespace) -> int:
    from avbench.cache.import_uavm import import_uavm

    s = import_uavm(args.train_json, args.test_json, args.labels, args.out, weights_csv=args.weights_csv,
                    dataset=args.dataset, feature_root=args.feature_root, workers=args.workers,
                    progress=not args.no_progress)
    c = s["info"].get("counts", {})
    state = "already complete" if s.get("complete") else "imported"
    print(f"{state}: {s['cache']} (key {s['key']})")
    if c:
        print(f"{c['done']}/{c['clips']} rows, {c['failed']} without any features, {c['no_audio']} without audio, "
              f"{c['no_video']} without video, {c['padded']} padded, {c['cut']} cut")
        if c["failed"] or c["no_audio"] or c["no_video"]:
            print(f"see {s['cache']}/failures.jsonl")
    return 0
