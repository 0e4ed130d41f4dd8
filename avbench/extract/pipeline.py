"""``avbench extract``: raw media -> an avbench feature cache, resumable and shardable.

Over 400 lines on purpose: the pipeline is one resumable flow (plan, models, preallocation, the
streaming loop, the manifest); its parts with a job of their own are beside it (decode, audio, loader,
models, onsets, distributed).

Flow: the dataset card reads the official label files into a clip list (media that is not on disk is
listed in ``missing.txt`` and left out); the audio and video timm models are built and probed for
their output sizes; the audio statistics come from the card or are measured (``--compute-norm``);
rank 0 preallocates every split through :class:`~avbench.cache.writer.CacheWriter`; then each rank
streams its block of pending rows through a DataLoader whose worker processes decode and compute
fbanks while the main process runs the models, and writes finished rows (``done.npy`` makes a rerun
continue where a killed one stopped). Files that cannot be read go to ``failures.jsonl`` with the
reason, and their row is written with neither modality present. The manifest appears last, once
every row of every split is done, with the counts a user needs to judge the data: done, failed,
missing streams, padded and cut clips, and the normalisation statistics used.

Per-row extras recorded in the cache: ``audio_frames`` (real fbank frames), ``video_frames`` (real
frames at ``fps``), ``duration`` (seconds read, up to the window), ``flags`` (bit 0 failed, bit 1
audio cut, bit 2 video cut).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avbench.cache import format as fmt
from avbench.cache.writer import CacheWriter
from avbench.config import config_hash
from avbench.datasets.adapters import ClipList, MediaCard
from avbench.errors import UserError
from avbench.extract import audio as afe
from avbench.extract import distributed
from avbench.extract.loader import FrontEnd, Job, make_loader
from avbench.extract.models import AudioExtractor, VideoExtractor, build_model, key_identity

FRONT_END_VERSION = 1  # bump when the per-clip processing changes numbers (it is part of the key)
FAILURES = "failures.jsonl"
MISSING = "missing.txt"
FLAG_FAILED, FLAG_AUDIO_CUT, FLAG_VIDEO_CUT = 1, 2, 4
EXTRAS = {"audio_frames": ("int32", ()), "video_frames": ("int32", ()), "duration": ("float32", ()),
          "flags": ("uint8", ())}


@dataclass
class ExtractSettings:
    """Everything that decides the numbers in the cache (hashed into its key)."""

    audio_model: str = "convnext_base"
    video_model: str = "convnext_base"
    audio_weights: str | None = None
    video_weights: str | None = None
    pretrained: bool = True
    target_length: int = 1000
    num_steps: int = 30
    fps: float = 3.0
    short_side: int = 224
    precision: str = "auto"  # auto | fp32 | bf16 (autocast for both models); auto is resolved before hashing


@dataclass
class RunOptions:
    """How the run goes (not part of the key)."""

    device: str = "cpu"
    workers: int = 1
    batch_size: int = 4
    compute_norm: bool = False
    norm_clips: int = 2000
    progress: bool = True
    threads: int | None = None  # torch threads for the models on CPU (None: leave torch's setting)


def _check(s: ExtractSettings, o: RunOptions) -> None:
    if s.target_length < 1 or s.num_steps < 1 or s.fps <= 0 or s.short_side < 16:
        raise UserError("--target-length, --num-steps and --fps must be positive; --short-side at least 16")
    if s.precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"--precision must be auto, fp32 or bf16, got '{s.precision}'")
    if o.workers < 0 or o.batch_size < 1:
        raise UserError("--workers must be >= 0 and --batch-size >= 1")
    if o.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")


def clips_hash(clips: ClipList) -> str:
    h = hashlib.sha256()
    for c in clips.clips:
        h.update(f"{c.split}\t{c.id}\t{','.join(map(str, c.labels))}\n".encode())
    return h.hexdigest()[:16]


class Extraction:
    """One extraction run (one rank of it under torchrun)."""

    def __init__(self, card: MediaCard, media_root: str | Path, out: str | Path, *, manifest: str | Path | None = None,
                 settings: ExtractSettings | None = None, options: RunOptions | None = None, log=None):
        self.card = card
        self.media_root = Path(media_root).expanduser()
        self.manifest_path = manifest
        self.out = Path(out).expanduser()
        self.s = settings or ExtractSettings()
        self.o = options or RunOptions()
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        _check(self.s, self.o)

    # ---------------------------------------------------------------- setup
    def _device(self, d: distributed.Dist) -> torch.device:
        if self.o.device.startswith("cuda"):
            return torch.device(f"cuda:{d.local_rank}" if self.o.device == "cuda" else self.o.device)
        return torch.device(self.o.device)

    def _resolve_precision(self, device: torch.device, d: distributed.Dist) -> None:
        """``auto`` becomes bf16 where the device computes it natively and faster, else fp32
        (avbench.hardware); the resolved precision is what the cache key records."""
        if self.s.precision != "auto":
            return
        from avbench.hardware import resolve_precision

        # Rank 0's choice for every rank: the precision is part of the cache key all ranks share.
        precision, why = d.broadcast(resolve_precision("auto", device))
        self.s = dataclasses.replace(self.s, precision=precision)
        if d.rank == 0:
            self.log(f"precision: {precision} ({why})")

    def _models(self, device: torch.device) -> tuple[AudioExtractor, VideoExtractor]:
        dtype = torch.bfloat16 if self.s.precision == "bf16" else None
        s = self.s
        am, aid = build_model(s.audio_model, in_chans=1, pretrained=s.pretrained, weights=s.audio_weights)
        vm, vid = build_model(s.video_model, in_chans=3, pretrained=s.pretrained, weights=s.video_weights)
        return AudioExtractor(am, aid, device, dtype), VideoExtractor(vm, vid, device, dtype)

    def _norm(self, clips: ClipList, fe: FrontEnd, d: distributed.Dist) -> dict[str, Any]:
        if not self.o.compute_norm:
            if self.card.audio_norm is None:
                raise UserError(f"dataset '{self.card.name}' has no published audio statistics: pass --compute-norm "
                                f"to measure them on its training clips")
            mean, std = self.card.audio_norm
            return {"mean": mean, "std": std, "source": f"card:{self.card.name}"}
        pool = [c for c in clips.clips if "train" in c.split] or list(clips.clips)
        pool.sort(key=lambda c: c.id)
        if len(pool) > self.o.norm_clips:
            pick = np.linspace(0, len(pool) - 1, self.o.norm_clips).round().astype(int)
            pool = [pool[i] for i in pick]
        start, stop = distributed.block(len(pool), d.rank, d.world)
        jobs = [Job(c.split, i, c.id, str(c.path)) for i, c in enumerate(pool[start:stop])]
        acc = afe.NormAccumulator()
        used = 0
        for batch in make_loader(jobs, fe, workers=self.o.workers, batch_size=self.o.batch_size, raw_fbank=True):
            for item in batch:
                if item["fbank"] is not None:
                    acc.add(item["fbank"])
                    used += 1
        count, total, total_sq, used = d.sum([acc.count, acc.total, acc.total_sq, used])
        merged = afe.NormAccumulator()
        merged.merge(int(count), total, total_sq)
        try:
            norm = merged.result()
        except ValueError:
            raise UserError("--compute-norm: none of the chosen clips has decodable audio") from None
        return {"mean": round(norm.mean, 6), "std": round(norm.std, 6), "source": "computed",
                "clips": int(used), "frames": int(count) // afe.NUM_MEL_BINS, "max_clips": self.o.norm_clips}

    # ---------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        d = distributed.from_env(self.o.device)
        threads = torch.get_num_threads()
        try:
            return self._run(d)
        finally:
            torch.set_num_threads(threads)  # the caller's setting again (tests, notebooks)
            d.close()

    def _run(self, d: distributed.Dist) -> dict[str, Any]:
        t_start = time.perf_counter()
        clips = self.card.list_clips(self.media_root, self.manifest_path)
        if not clips.clips:
            ex = clips.missing[0].expected if clips.missing else "?"
            raise UserError(f"none of the {len(clips.missing)} listed media files is under {self.media_root} "
                            f"(e.g. {ex})")
        device = self._device(d)
        if self.o.threads:
            torch.set_num_threads(self.o.threads)
        self._resolve_precision(device, d)
        amodel, vmodel = self._models(device)
        a_steps, a_dim = amodel.probe(self.s.target_length, afe.NUM_MEL_BINS)
        v_dim = vmodel.probe(self.s.short_side)
        stride = max(1, round(self.s.target_length / a_steps))
        step_seconds = stride * afe.FRAME_SHIFT_MS / 1000.0
        fe = FrontEnd(target_length=self.s.target_length, num_steps=self.s.num_steps, fps=self.s.fps,
                      short_side=self.s.short_side, step_seconds=step_seconds)
        norm = self._resume_norm(clips) if self.o.compute_norm else None
        if norm is None:
            norm = self._norm(clips, fe, d)
        fe = dataclasses.replace(fe, norm_mean=float(norm["mean"]), norm_std=float(norm["std"]))
        settings = {
            **{k: v for k, v in dataclasses.asdict(self.s).items() if k not in ("audio_weights", "video_weights")},
            "sample_rate": afe.SAMPLE_RATE, "mel_bins": afe.NUM_MEL_BINS, "frame_shift_ms": afe.FRAME_SHIFT_MS,
            "frame_length_ms": afe.FRAME_LENGTH_MS, "window": afe.WINDOW, "norm_mean": fe.norm_mean,
            "norm_std": fe.norm_std, "audio_steps_from_model": a_steps, "audio_step_frames": stride,
            "onset_step_seconds": step_seconds, "video_normalisation": "imagenet", "video_crop": "none",
            "front_end_version": FRONT_END_VERSION,
        }
        chash = clips_hash(clips)
        key = config_hash({"dataset": self.card.name, "clips": chash}, key_identity(amodel.identity),
                          key_identity(vmodel.identity), settings)
        manifest = fmt.Manifest(
            dataset=self.card.name, task=clips.task, num_classes=len(clips.classes), num_steps=self.s.num_steps,
            audio_dim=a_dim, video_dim=v_dim, key=key,
            extractor={"audio": {**amodel.identity, "features": "forward_features, mean over frequency"},
                       "video": {**vmodel.identity, "features": "forward_features, spatial mean"},
                       "settings": settings},
            provenance={"source": "avbench extract", "media_root": str(self.media_root),
                        "labels": clips.source, "clip_list_sha256": chash},
            info={"norm": norm})
        finished = self._finished(key, quiet=d.rank != 0)
        if finished is not None:
            return {**finished, "rank": d.rank, "world": d.world}
        splits = clips.splits()
        # Rank 0 creates everything; the others reopen after the barrier.
        err = None
        writer = None
        if d.rank == 0:
            try:
                writer = self._open(manifest, clips, splits, rank=0)
                self._write_missing(clips)
            except UserError as e:
                err = str(e)
        err = d.broadcast(err)
        if err is not None:
            raise UserError(err)
        d.barrier()
        if d.rank != 0:
            writer = self._open(manifest, clips, splits, rank=d.rank)
        assert writer is not None
        jobs = []
        for name, recs in splits.items():
            sw = writer.splits[name]
            start, stop = distributed.block(len(recs), d.rank, d.world)
            for row in sw.pending(np.arange(start, stop)):
                jobs.append(Job(name, int(row), recs[row].id, str(recs[row].path)))
        counts = self._extract(jobs, fe, writer, amodel, vmodel, d)
        keys = sorted(counts)
        counts = dict(zip(keys, (int(x) for x in d.sum([counts[k] for k in keys]))))  # all ranks (a barrier too)
        summary = {"cache": str(self.out), "key": key, "rank": d.rank, "world": d.world,
                   "this_run": counts, "timing": {k: round(v, 2) for k, v in self.timing.items()},
                   "bound_by": _bound(self.timing), "seconds": time.perf_counter() - t_start,
                   "missing_media": len(clips.missing)}
        if d.rank == 0:
            self._merge_failures()
            writer = self._open(manifest, clips, splits, rank=0)  # fresh view of every rank's rows
            info = self._info(writer, norm, clips)
            writer.finalize(info)
            from avbench.cache.reader import record_validation  # official split, or a stratified hold-out

            summary["validation"] = record_validation(self.out).record
            summary["info"] = info
        d.barrier()
        return summary

    def _resume_norm(self, clips: ClipList) -> dict | None:
        """Statistics measured by an interrupted run on the same clip list (no second pass)."""
        for name in (fmt.PENDING, fmt.MANIFEST):
            p = self.out / name
            if p.exists():
                try:
                    data = json.loads(p.read_text())
                except (OSError, json.JSONDecodeError):
                    return None
                norm = data.get("info", {}).get("norm")
                same = data.get("provenance", {}).get("clip_list_sha256") == clips_hash(clips)
                if same and norm and norm.get("source") == "computed" and norm.get("max_clips") == self.o.norm_clips:
                    return norm
        return None

    def _finished(self, key: str, quiet: bool = False) -> dict | None:
        p = self.out / fmt.MANIFEST
        if not p.exists():
            return None
        data = json.loads(p.read_text())
        if data.get("key") != key:
            raise UserError(f"{self.out}: a finished cache with other settings (key {data.get('key')}) is there; "
                            f"remove it or choose another --out")
        if not quiet:
            self.log(f"{self.out}: already complete (key {key}); nothing to do")
        return {"cache": str(self.out), "key": key, "complete": True, "info": data.get("info", {}),
                "this_run": {"clips": 0}}

    def _open(self, manifest: fmt.Manifest, clips: ClipList, splits: dict, rank: int) -> CacheWriter:
        m = fmt.Manifest.from_json(json.loads(json.dumps(manifest.to_json())))
        w = CacheWriter(self.out, m, clips.classes)
        for name, recs in splits.items():
            labels = np.zeros((len(recs), len(clips.classes)), np.uint8)
            for i, r in enumerate(recs):
                labels[i, list(r.labels)] = 1
            w.create_split(name, [r.id for r in recs], labels, with_onsets=True, extras=EXTRAS, rank=rank)
        return w

    def _write_missing(self, clips: ClipList) -> None:
        if clips.missing:
            lines = [f"{c.split}\t{c.id}\t{c.expected}\n" for c in clips.missing]
            tmp = self.out / (MISSING + ".tmp")
            tmp.write_text("split\tid\texpected\n" + "".join(lines))
            tmp.replace(self.out / MISSING)

    # ---------------------------------------------------------------- the loop
    def _extract(self, jobs: list[Job], fe: FrontEnd, writer: CacheWriter, amodel: AudioExtractor,
                 vmodel: VideoExtractor, d: distributed.Dist) -> dict[str, int]:
        counts = {"clips": 0, "failed": 0, "no_audio": 0, "no_video": 0}
        self.timing = {"wait_for_decode_s": 0.0, "audio_model_s": 0.0, "video_model_s": 0.0, "write_s": 0.0}
        if not jobs:
            return counts
        from tqdm import tqdm

        fail_path = self.out / f"failures.part{d.rank}.jsonl"
        desc = "extract" + (f" rank {d.rank}/{d.world}" if d.active else "")
        bar = tqdm(total=len(jobs), unit="clip", desc=desc, disable=not (self.o.progress and d.rank == 0),
                   file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
        loader = make_loader(jobs, fe, workers=self.o.workers, batch_size=self.o.batch_size)
        T = self.s.num_steps
        with open(fail_path, "a") as fail_log:
            batches = iter(loader)
            while True:
                t0 = time.perf_counter()
                batch = next(batches, None)
                self.timing["wait_for_decode_s"] += time.perf_counter() - t0
                if batch is None:
                    break
                audio, video = self._features(batch, amodel, vmodel, fail_log)
                t0 = time.perf_counter()
                by_split: dict[str, list[int]] = {}
                for i, item in enumerate(batch):
                    by_split.setdefault(item["split"], []).append(i)
                for split, idx in by_split.items():
                    n = len(idx)
                    rows = np.array([batch[i]["row"] for i in idx])
                    present = np.zeros((n, 2), bool)
                    onsets = np.zeros((n, T), bool)
                    flags = np.zeros(n, np.uint8)
                    for j, i in enumerate(idx):
                        it = batch[i]
                        failed = it["error"] is not None
                        present[j] = (not failed and audio[i] is not None, not failed and video[i] is not None)
                        if it["onsets"] is not None and present[j, 0]:
                            onsets[j] = it["onsets"].numpy()
                        flags[j] = (FLAG_FAILED * failed) | (FLAG_AUDIO_CUT * bool(it["audio_cut"])) \
                            | (FLAG_VIDEO_CUT * bool(it["video_cut"]))
                        counts["failed"] += failed
                        counts["no_audio"] += (not failed and not present[j, 0])
                        counts["no_video"] += (not failed and not present[j, 1])
                    a = np.stack([_fit(audio[i], T, writer.manifest.audio_dim) for i in idx])
                    v = np.stack([_fit(video[i], T, writer.manifest.video_dim) for i in idx])
                    writer.splits[split].write(
                        rows, a, v, present=present, onsets=onsets,
                        audio_frames=np.array([batch[i]["audio_frames"] for i in idx], np.int32),
                        video_frames=np.array([batch[i]["video_frames"] for i in idx], np.int32),
                        duration=np.array([batch[i]["duration"] for i in idx], np.float32), flags=flags)
                self.timing["write_s"] += time.perf_counter() - t0
                counts["clips"] += len(batch)
                bar.update(len(batch))
                bar.set_postfix(failed=counts["failed"], refresh=False)
        bar.close()
        return counts

    def _features(self, batch: list[dict], amodel: AudioExtractor, vmodel: VideoExtractor,
                  fail_log) -> tuple[list, list]:
        """Per item: audio ``[T', Da]`` / video ``[k, Dv]`` float16 arrays, or None (absent or failed)."""
        audio: list[np.ndarray | None] = [None] * len(batch)
        video: list[np.ndarray | None] = [None] * len(batch)
        t0 = time.perf_counter()
        with_audio = [i for i, it in enumerate(batch) if it["error"] is None and it["fbank"] is not None]
        if with_audio:
            for idx, out in _run_grouped(with_audio, lambda ids: amodel(torch.stack([batch[i]["fbank"] for i in ids])),
                                         batch, "audio model"):
                for j, i in enumerate(idx):
                    audio[i] = out[j].cpu().numpy().astype(np.float16)
        t1 = time.perf_counter()
        self.timing["audio_model_s"] += t1 - t0
        with_video = [i for i, it in enumerate(batch) if it["error"] is None and it["frames"] is not None]
        groups: dict[tuple, list[int]] = {}
        for i in with_video:
            groups.setdefault(tuple(batch[i]["frames"].shape[1:]), []).append(i)
        for ids in groups.values():
            def run(sub: list[int]) -> list[torch.Tensor]:
                frames = torch.cat([batch[i]["frames"] for i in sub])
                feats = vmodel(frames)
                return list(torch.split(feats, [batch[i]["frames"].shape[0] for i in sub]))
            for idx, out in _run_grouped(ids, run, batch, "video model"):
                for j, i in enumerate(idx):
                    video[i] = out[j].cpu().numpy().astype(np.float16)
        self.timing["video_model_s"] += time.perf_counter() - t1
        for it in batch:
            if it["error"] is not None:
                fail_log.write(json.dumps({"split": it["split"], "row": it["row"], "id": it["id"],
                                           "path": it["path"], "reason": it["error"]}) + "\n")
        fail_log.flush()
        return audio, video

    # ---------------------------------------------------------------- closing
    def _merge_failures(self) -> None:
        """Fold every rank's part file into failures.jsonl, one line per (split, row)."""
        final = self.out / FAILURES
        seen: dict[tuple, str] = {}
        for p in [final, *sorted(self.out.glob("failures.part*.jsonl"))]:
            if p.exists():
                for line in p.read_text().splitlines():
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line torn by a killed run
                    seen.setdefault((rec.get("split"), rec.get("row")), json.dumps(rec))
        if seen or final.exists():
            tmp = self.out / (FAILURES + ".tmp")
            tmp.write_text("".join(v + "\n" for v in seen.values()))
            tmp.replace(final)
        for p in self.out.glob("failures.part*.jsonl"):
            p.unlink()

    def _info(self, writer: CacheWriter, norm: dict, clips: ClipList) -> dict[str, Any]:
        T = self.s.num_steps
        stride = writer.manifest.extractor["settings"]["audio_step_frames"]
        per_split = {}
        tot = {"clips": 0, "done": 0, "failed": 0, "no_audio": 0, "no_video": 0, "padded": 0, "cut": 0,
               "audio_padded": 0, "video_padded": 0, "audio_cut": 0, "video_cut": 0}
        for name, sw in writer.splits.items():
            flags = np.asarray(sw.extras["flags"])
            ok = (flags & FLAG_FAILED) == 0
            present = np.asarray(sw.present)
            af = np.asarray(sw.extras["audio_frames"])
            vf = np.asarray(sw.extras["video_frames"])
            a_pad = ok & present[:, 0] & (af < T * stride)
            v_pad = ok & present[:, 1] & (vf < T)
            a_cut = ok & ((flags & FLAG_AUDIO_CUT) != 0)
            v_cut = ok & ((flags & FLAG_VIDEO_CUT) != 0)
            c = {"clips": sw.size, "done": int(np.asarray(sw.done).sum()), "failed": int((~ok).sum()),
                 "no_audio": int((ok & ~present[:, 0]).sum()), "no_video": int((ok & ~present[:, 1]).sum()),
                 "padded": int((a_pad | v_pad).sum()), "cut": int((a_cut | v_cut).sum()),
                 "audio_padded": int(a_pad.sum()), "video_padded": int(v_pad.sum()),
                 "audio_cut": int(a_cut.sum()), "video_cut": int(v_cut.sum())}
            per_split[name] = c
            for k in tot:
                tot[k] += c[k]
        return {"norm": norm, "counts": tot, "splits": per_split, "missing_media": len(clips.missing),
                "missing_list": MISSING if clips.missing else None,
                "failures": FAILURES if tot["failed"] else None,
                "padded_means": f"audio shorter than {T} steps x {stride} fbank frames, or fewer than {T} video frames",
                "failed_rows": "present = [False, False] and extra 'flags' bit 0; see failures.jsonl"}


def _bound(timing: dict[str, float]) -> str:
    """What limited the loop: waiting for decoded clips, or the models (on this rank)."""
    model = timing.get("audio_model_s", 0.0) + timing.get("video_model_s", 0.0)
    if not model and not timing.get("wait_for_decode_s"):
        return "nothing to do"
    if timing.get("wait_for_decode_s", 0.0) > model:
        return "decoding (add --workers)"
    side = "video" if timing.get("video_model_s", 0.0) >= timing.get("audio_model_s", 0.0) else "audio"
    return f"models ({side} model the larger share)"


def _fit(x: np.ndarray | None, steps: int, dim: int) -> np.ndarray:
    """Zero-pad or cut ``[n, dim]`` features to ``[steps, dim]`` (None: all zeros)."""
    out = np.zeros((steps, dim), np.float16)
    if x is not None:
        n = min(steps, x.shape[0])
        out[:n] = x[:n]
    return out


def _run_grouped(ids: list[int], fn, batch: list[dict], what: str):
    """Run ``fn`` on all ``ids`` at once; if that fails, clip by clip, marking the clips that fail."""
    try:
        out = fn(ids)
    except Exception:  # noqa: BLE001 - fall back to one clip at a time to isolate the bad one
        out = None
    if out is not None:
        yield ids, out
        return
    for i in ids:
        try:
            one = fn([i])
        except Exception as e:  # noqa: BLE001
            batch[i]["error"] = f"{what} failed: {type(e).__name__}: {e}"
            continue
        yield [i], one
