"""``avbench extract``: features from raw media into a feature cache (see avbench/extract/pipeline.py)."""

from __future__ import annotations

import argparse
import os
import sys


def _default_workers() -> int:
    from avbench.hardware import usable_cpus

    return max(1, min(8, usable_cpus() // 2))


def _default_threads(args: argparse.Namespace) -> int | None:
    """On CPU, leave the decoding workers their cores: oversubscribed OpenMP threads spin and stall."""
    if not args.device.startswith("cpu") or os.environ.get("OMP_NUM_THREADS"):
        return None
    from avbench.hardware import usable_cpus

    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (usable_cpus() - args.workers * ranks) // ranks)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="extract audio and video features from media files into a cache",
                       description="Decode media with PyAV, compute Kaldi fbank + timm audio features and "
                                   "3 fps timm video features, and write an avbench cache (resumable; "
                                   "run under torchrun to shard across processes).")
    p.add_argument("--dataset", required=True, help="dataset card: vggsound, audioset, ave, llp, csv, or module:Class")
    p.add_argument("--media-root", required=True, help="folder holding the media files")
    p.add_argument("--manifest", help="the dataset's label file(s) (default: looked for under the media root)")
    p.add_argument("--out", help="cache directory (default: <cache root>/<dataset>)")
    p.add_argument("--cache-root",
                   help="cache root for the default --out (default: $AVBENCH_CACHE_DIR or the user cache)")
    g = p.add_argument_group("models")
    g.add_argument("--audio-model", default="convnext_base", help="timm model name for audio (1-channel stem)")
    g.add_argument("--video-model", default="convnext_base", help="timm model name for video frames")
    g.add_argument("--audio-weights", help="local checkpoint for the audio model (.pth/.pt/.safetensors)")
    g.add_argument("--video-weights", help="local checkpoint for the video model")
    g.add_argument("--no-pretrained", action="store_true",
                   help="random (seeded) weights instead of timm's pretrained ones")
    g.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="model precision (bf16 = bf16 autocast; auto, the default: bf16 where the device computes "
                        "it natively and faster, else fp32; the cache key records the one used)")
    f = p.add_argument_group("front end")
    f.add_argument("--target-length", type=int, default=1000, help="fbank frames per clip, padded or cut (1000 = 10 s)")
    f.add_argument("--num-steps", type=int, default=30, help="feature steps T per clip")
    f.add_argument("--fps", type=float, default=3.0, help="video frames per second")
    f.add_argument("--short-side", type=int, default=224, help="frame short side in pixels (aspect kept, no crop)")
    f.add_argument("--compute-norm", action="store_true", help="measure the fbank mean/std on the training clips")
    f.add_argument("--norm-clips", type=int, default=2000, help="at most this many clips for --compute-norm")
    r = p.add_argument_group("run")
    r.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (under torchrun: cuda:LOCAL_RANK)")
    r.add_argument("--workers", type=int, default=None,
                   help="decoding worker processes (default: half the usable cores, at most 8)")
    r.add_argument("--batch-size", type=int, default=4, help="clips per model batch")
    r.add_argument("--threads", type=int, help="torch threads for the models on CPU (default: the cores left "
                                               "after the workers, divided among torchrun's local ranks)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_extract)


def cmd_extract(args: argparse.Namespace) -> int:
    from avbench.datasets.adapters import MediaCard
    from avbench.errors import UserError
    from avbench.extract.pipeline import Extraction, ExtractSettings, RunOptions
    from avbench.paths import cache_root
    from avbench.registry import load_dataset

    if args.workers is None:  # the default needs the machine's cores: found here, not when the parser is built
        args.workers = _default_workers()
    card = load_dataset(args.dataset)
    if not isinstance(card, MediaCard):
        raise UserError(f"dataset '{args.dataset}' is not extracted from media (it has no label-file adapter)")
    out = args.out or str(card.cache_dir(cache_root(args.cache_root), None))
    settings = ExtractSettings(
        audio_model=args.audio_model, video_model=args.video_model, audio_weights=args.audio_weights,
        video_weights=args.video_weights, pretrained=not args.no_pretrained, target_length=args.target_length,
        num_steps=args.num_steps, fps=args.fps, short_side=args.short_side, precision=args.precision)
    options = RunOptions(device=args.device, workers=args.workers, batch_size=args.batch_size,
                         compute_norm=args.compute_norm, norm_clips=args.norm_clips, progress=not args.no_progress,
                         threads=args.threads or _default_threads(args))
    summary = Extraction(card, args.media_root, out, manifest=args.manifest, settings=settings,
                         options=options).run()
    if summary.get("rank", 0) == 0:
        print_summary(summary)
    return 0


def print_summary(summary: dict) -> None:
    info = summary.get("info", {})
    c = info.get("counts", {})
    run = summary.get("this_run", {})
    secs = summary.get("seconds")
    if summary.get("complete"):
        print(f"{summary['cache']}: complete (key {summary['key']})")
    elif secs:
        rate = run.get("clips", 0) / secs if secs else 0.0
        print(f"extracted {run.get('clips', 0)} clips in {secs:.1f} s ({rate:.2f} clips/s)"
              + (f" over {summary['world']} ranks" if summary.get("world", 1) > 1 else ""))
        t = summary.get("timing", {})
        if t:
            print(f"time in the loop: waiting for decoded clips {t['wait_for_decode_s']:.1f} s, audio model "
                  f"{t['audio_model_s']:.1f} s, video model {t['video_model_s']:.1f} s, writing {t['write_s']:.1f} s"
                  f" -> bound by {summary.get('bound_by')}")
    if c:
        print(f"cache {summary['cache']}: {c['done']}/{c['clips']} rows done, {c['failed']} failed, "
              f"{c['no_audio']} without audio, {c['no_video']} without video, {c['padded']} padded, {c['cut']} cut")
        norm = info.get("norm", {})
        print(f"audio norm mean {norm.get('mean')} std {norm.get('std')} ({norm.get('source')})")
    missing = info.get("missing_media", summary.get("missing_media", 0))
    if missing:
        print(f"{missing} listed clips have no media file under the media root: see {summary['cache']}/missing.txt")
    if info.get("failures"):
        print(f"failures: {summary['cache']}/{info['failures']}")
    sys.stdout.flush()
