"""Extraction throughput: the full pipeline in clips/s, and what bounds it (decoding, fbank or model).

Run: ``pytest benchmarks/bench_extract.py --benchmark-json bench-extract.json`` (add
``-k atto`` for the quick part; the ConvNeXt-Base runs take minutes on a small CPU). Set
``AVBENCH_BENCH_DEVICE=cuda`` to run the models on a GPU, ``AVBENCH_BENCH_CLIPS`` to change the clip
count, ``AVBENCH_BENCH_THREADS`` for torch's intra-op threads in the main process.

Media: the 25 real ten-second clips of ``../shared/data/farm-av`` (320x240 H.264, 16 kHz AAC) when
present, else as many generated ten-second clips of the same size. Weights are random (timing does
not depend on them). Each benchmark stores its per-clip figures in ``extra_info``:

* ``test_front_end_stages``: per-clip CPU seconds of decoding (PyAV, both streams, frames scaled to
  the 224 short side), resampling + fbank, and onsets, as a decoding worker runs them;
* ``test_model_costs``: per-clip seconds (wall and CPU) of each model on one thread (audio: one
  1000x128 spectrogram; video: 30 frames), fp32 and bf16 autocast;
* ``test_pipeline_*``: the whole ``avbench extract`` run, workers decoding while the models run.

The pipeline is bound by whichever is larger: front-end seconds per clip / workers, or audio-model +
video-model seconds per clip.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from avbench.extract import audio as afe
from avbench.extract.decode import decode_clip
from avbench.extract.loader import FrontEnd, Job, load_clip
from avbench.extract.models import AudioExtractor, VideoExtractor, build_model
from avbench.extract.onsets import onset_steps, onset_times
from avbench.extract.pipeline import Extraction, ExtractSettings, RunOptions
from avbench.extract.testmedia import write_clip
from avbench.registry import load_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AVBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
DEVICE = os.environ.get("AVBENCH_BENCH_DEVICE", "cpu")
N_CLIPS = int(os.environ.get("AVBENCH_BENCH_CLIPS", "25"))
N_BASE = int(os.environ.get("AVBENCH_BENCH_BASE_CLIPS", "4" if DEVICE == "cpu" else "25"))
if os.environ.get("AVBENCH_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["AVBENCH_BENCH_THREADS"]))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A csv-card folder of ten-second clips: farm-av when available, else generated."""
    root = tmp_path_factory.mktemp("bench-media")
    farm = SHARED / "farm-av"
    if farm.is_dir():
        clips = sorted((farm / "clips").glob("*.mp4"))
        src = [clips[i % len(clips)] for i in range(N_CLIPS)]
    else:
        src = [write_clip(root / f"gen{i}.mp4", seconds=10.0, fps=25, size=(320, 240), clicks=[1.0 + i % 7, 6.5],
                          seed=i) for i in range(min(N_CLIPS, 25))]
        src = [src[i % len(src)] for i in range(N_CLIPS)]
    files = []
    for i, p in enumerate(src):
        dst = root / f"clip{i:03d}.mp4"
        shutil.copyfile(p, dst)
        files.append(dst)
    (root / "manifest.csv").write_text("file,label,split\n" + "".join(f"{f.name},c{i % 3},train\n"
                                                                     for i, f in enumerate(files)))
    return root, files


def _per_clip(seconds: float, n: int) -> float:
    return round(seconds / n, 4)


def test_front_end_stages(benchmark, media):
    """Decode + fbank + onsets per clip on one core (what one decoding worker does)."""
    _, files = media
    files = files[:10]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fe = FrontEnd(norm_mean=-5.081, norm_std=4.4849)
        stages = {"decode": 0.0, "resample_fbank": 0.0, "onsets": 0.0}
        for f in files:  # warm-up (librosa's first call compiles) and a stage breakdown
            load_clip(Job("t", 0, "w", str(f)), fe)
        clock = time.process_time  # CPU seconds: what a worker core spends, robust to a busy machine
        for f in files:
            t0 = clock()
            clip = decode_clip(f, max_seconds=fe.window_seconds + 0.1)
            t1 = clock()
            wave = afe.resample(clip.waveform, clip.sample_rate)[: afe.window_samples(1000)]
            afe.front_end(wave, 1000, fe.norm)
            t2 = clock()
            onset_steps(onset_times(wave), 0.32, 30)
            t3 = clock()
            stages["decode"] += t1 - t0
            stages["resample_fbank"] += t2 - t1
            stages["onsets"] += t3 - t2

        walls, cpus = [], []

        def run():
            t, c = time.perf_counter(), time.process_time()
            for f in files:
                load_clip(Job("t", 0, "b", str(f)), fe)
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)

        benchmark.pedantic(run, rounds=2, iterations=1)
        cpu = min(cpus) / len(files)
        per = min(walls) / len(files)
        benchmark.extra_info["front_end_cpu_s_per_clip"] = round(cpu, 4)
        benchmark.extra_info.update({f"{k}_cpu_s_per_clip": _per_clip(v, len(files)) for k, v in stages.items()})
        benchmark.extra_info["front_end_s_per_clip"] = round(per, 4)
        benchmark.extra_info["front_end_clips_per_s_one_core"] = round(1 / per, 2)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["convnext_atto", "convnext_base"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_model_costs(benchmark, name, precision):
    """Per-clip model seconds on one thread (wall and CPU time; CPU time is robust to a busy machine):
    audio on one 1000x128 spectrogram, video on 30 frames of 224x298 (a 320x240 clip at 3 fps)."""
    device = torch.device(DEVICE)
    _skip_emulated(precision, device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(int(os.environ.get("AVBENCH_BENCH_THREADS", "1")))
    dtype = torch.bfloat16 if precision == "bf16" else None
    am, aid = build_model(name, in_chans=1, pretrained=False, weights=None)
    vm, vid = build_model(name, in_chans=3, pretrained=False, weights=None)
    audio, video = AudioExtractor(am, aid, device, dtype), VideoExtractor(vm, vid, device, dtype)
    fb = torch.randn(1, 1000, 128)
    frames = torch.randint(0, 255, (30, 224, 298, 3), dtype=torch.uint8)
    audio(fb)
    video(frames[:2])

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn, *a):
        t, c = time.perf_counter(), time.process_time()
        fn(*a)
        sync()
        return time.perf_counter() - t, time.process_time() - c

    try:
        a_wall, a_cpu = min(timed(audio, fb) for _ in range(2))
        cpu, wall = [], []

        def run_video():
            t, c = time.perf_counter(), time.process_time()
            video(frames)
            sync()
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)

        benchmark.pedantic(run_video, rounds=1 if name == "convnext_base" and DEVICE == "cpu" else 3, iterations=1)
        v_wall = min(wall)
        benchmark.extra_info.update({
            "audio_model_s_per_clip": round(a_wall, 4), "video_model_s_per_clip": round(v_wall, 4),
            "audio_model_cpu_s_per_clip": round(a_cpu, 4), "video_model_cpu_s_per_clip": round(min(cpu), 4),
            "models_clips_per_s": round(1 / (a_wall + v_wall), 3), "threads": torch.get_num_threads(),
            "device": DEVICE, "precision": precision})
    finally:
        torch.set_num_threads(threads)


def _pipeline(benchmark, media, tmp_path, name: str, n: int, precision: str = "fp32"):
    root, files = media
    manifest = root / f"manifest_{n}.csv"
    manifest.write_text("file,label,split\n" + "".join(f"{f.name},c{i % 3},train\n" for i, f in enumerate(files[:n])))
    workers = max(1, min(8, (os.cpu_count() or 2) // 2))
    settings = ExtractSettings(audio_model=name, video_model=name, pretrained=False, precision=precision)
    threads = max(1, (os.cpu_count() or 2) - workers) if DEVICE == "cpu" else None
    if os.environ.get("AVBENCH_BENCH_THREADS"):
        threads = int(os.environ["AVBENCH_BENCH_THREADS"])
    opts = RunOptions(device=DEVICE, workers=workers, batch_size=4, progress=False, threads=threads)
    counter = iter(range(1000))

    card = load_dataset("csv")
    card.audio_norm = (-5.081, 4.4849)  # the VGGSound statistics: no norm pass in the timing

    def run_csv():
        out = tmp_path / f"cache{next(counter)}"
        return Extraction(card, root, out, manifest=manifest, settings=settings, options=opts).run()

    t = time.perf_counter()
    summary = benchmark.pedantic(run_csv, rounds=1, iterations=1)
    wall = time.perf_counter() - t
    assert summary["info"]["counts"]["done"] == n and summary["info"]["counts"]["failed"] == 0
    benchmark.extra_info.update({"clips": n, "wall_s": round(wall, 2), "clips_per_s": round(n / wall, 3),
                                 "workers": workers, "batch_size": 4, "threads": torch.get_num_threads(),
                                 "device": DEVICE, "precision": precision, "model": name,
                                 "loop_s": summary["timing"], "bound_by": summary["bound_by"]})


def test_pipeline_convnext_atto(benchmark, media, tmp_path):
    _pipeline(benchmark, media, tmp_path, "convnext_atto", N_CLIPS)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_pipeline_convnext_base_defaults(benchmark, media, tmp_path, precision):
    _skip_emulated(precision, torch.device(DEVICE))
    _pipeline(benchmark, media, tmp_path, "convnext_base", N_BASE, precision)


def _skip_emulated(precision: str, device: torch.device) -> None:
    """bf16 only where it is the fast path (avbench.hardware): emulated, ConvNeXt-Base takes minutes a clip."""
    from avbench.hardware import resolve_precision

    chosen, why = resolve_precision("auto", device)
    if precision == "bf16" and chosen != "bf16":
        pytest.skip(f"bf16 is not the fast path here: {why}")
