"""``avbench cache import-uavm``: the UAVM authors' released features -> an avbench cache.

Input, as the authors publish it: datafile JSONs ``{"data": [{"labels": "vgg_3,...", "afeat":
".../<id>.npy", "vfeat": ".../<id>.npy", ...}]}`` (one for training, one for test), per-clip ``.npy``
files of shape ``[30, 1024]`` (audio float32 from their fine-tuned 1-channel ConvNeXt-Base, video
float16 from torchvision's ImageNet ConvNeXt-Base at 3 fps), and ``class_labels_indices.csv``
(``index,mid,display_name``) whose mids the JSON labels name. The JSON row order is kept, so the
authors' balanced-sampling weight file (``--weights-csv``, one weight per line in JSON order) lines
up with the cache; it is checked against the weights recomputed from the labels (a clip's weight is
the sum over its labels of ``1000 / (class_count + 0.01)``, counts over the training split) before
anything is written.

Features are padded or cut to T = 30 steps (the authors' loader does the same). A clip whose
feature file is missing or unreadable keeps its row: that modality is marked absent and the clip is
recorded in ``failures.jsonl``; with both missing, its flags mark it failed. The import resumes
from ``done.npy`` when interrupted.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avbench.cache import format as fmt
from avbench.cache.reader import record_validation
from avbench.cache.writer import CacheWriter
from avbench.config import config_hash
from avbench.datasets.adapters import read_class_indices
from avbench.errors import UserError

NUM_STEPS = 30
IMPORTER_VERSION = 1
FLAG_FAILED = 1
EXTRAS = {"flags": ("uint8", ()), "audio_steps": ("int32", ()), "video_steps": ("int32", ())}
CHUNK = 256


@dataclass
class Entry:
    id: str
    labels: tuple[int, ...]
    afeat: str
    vfeat: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def read_datafile(path: Path, by_mid: dict[str, int], base: Path | None) -> list[Entry]:
    """Entries of one datafile, in file order. Relative feature paths resolve against ``base``."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"datafile not found: {path}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise UserError(f"{path}: expected {{\"data\": [...]}}")
    out: list[Entry] = []
    seen: set[str] = set()
    for n, d in enumerate(data["data"]):
        missing = [k for k in ("labels", "afeat", "vfeat") if k not in d]
        if missing:
            raise UserError(f"{path}: entry {n} lacks {', '.join(missing)}")
        mids = [m.strip() for m in str(d["labels"]).split(",") if m.strip()]
        unknown = [m for m in mids if m not in by_mid]
        if unknown:
            raise UserError(f"{path}: entry {n} has label(s) {', '.join(unknown[:3])} not in the label CSV")
        if not mids:
            raise UserError(f"{path}: entry {n} has no label")
        afeat, vfeat = str(d["afeat"]), str(d["vfeat"])
        if base is not None:
            afeat = afeat if os.path.isabs(afeat) else str(base / afeat)
            vfeat = vfeat if os.path.isabs(vfeat) else str(base / vfeat)
        clip_id = Path(afeat).stem or Path(vfeat).stem
        if clip_id in seen:
            raise UserError(f"{path}: clip '{clip_id}' appears twice")
        seen.add(clip_id)
        out.append(Entry(clip_id, tuple(sorted({by_mid[m] for m in mids})), afeat, vfeat))
    if not out:
        raise UserError(f"{path}: no entries")
    return out


def balanced_weights(labels: list[tuple[int, ...]], num_classes: int) -> np.ndarray:
    """The authors' sampling weights: per clip, the sum over its labels of 1000 / (count + 0.01)."""
    counts = np.zeros(num_classes)
    for labs in labels:
        counts[list(labs)] += 1
    per_class = 1000.0 / (counts + 0.01)
    return np.array([per_class[list(labs)].sum() for labs in labels])


def check_weights(path: Path, train: list[Entry], num_classes: int) -> dict[str, Any]:
    try:
        given = np.loadtxt(path, ndmin=1, dtype=np.float64)
    except (OSError, ValueError) as e:
        raise UserError(f"--weights-csv {path}: unreadable ({e})") from None
    ours = balanced_weights([e.labels for e in train], num_classes)
    if given.shape != ours.shape:
        raise UserError(f"--weights-csv {path}: {given.size} weights for {ours.size} training clips")
    rel = np.abs(given - ours) / np.maximum(np.abs(ours), 1e-12)
    if not np.all(rel < 1e-4):
        i = int(np.argmax(rel))
        raise UserError(f"--weights-csv {path}: weight of clip {i} ({train[i].id}) is {given[i]:.6g}, the labels "
                        f"give {ours[i]:.6g}: the JSON order or labels differ from the authors' file")
    return {"file": str(path), "sha256": _sha256(path), "max_relative_difference": float(rel.max())}


def _load(path: str, steps: int) -> tuple[np.ndarray | None, int, str | None]:
    """Feature file -> ([steps, D] float32 padded/cut, original steps, error)."""
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None, 0, "file not found"
    except Exception as e:  # noqa: BLE001 - any unreadable file is recorded, not fatal
        return None, 0, f"unreadable: {type(e).__name__}: {e}"
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        return None, 0, f"expected a [T, D] float array, got {x.dtype}{list(x.shape)}"
    n = x.shape[0]
    out = np.zeros((steps, x.shape[1]), np.float32)
    out[: min(n, steps)] = x[:steps]
    return out, n, None


def import_uavm(train_json: str | Path, test_json: str | Path, labels_csv: str | Path, out: str | Path, *,
                weights_csv: str | Path | None = None, dataset: str | None = None,
                feature_root: str | Path | None = None, workers: int = 8, progress: bool = True) -> dict[str, Any]:
    """Write the cache; returns a summary (counts, key). Resumes an interrupted import."""
    labels_csv = Path(labels_csv)
    classes = read_class_indices(labels_csv)
    by_mid = {mid: i for i, (mid, _) in enumerate(classes)}
    base = Path(feature_root) if feature_root else None
    splits = {"train": read_datafile(Path(train_json), by_mid, base),
              "test": read_datafile(Path(test_json), by_mid, base)}
    weights = check_weights(Path(weights_csv), splits["train"], len(classes)) if weights_csv else None
    dataset = dataset or {309: "vggsound", 527: "audioset"}.get(len(classes), "uavm")
    task = "multilabel" if any(len(e.labels) != 1 for es in splits.values() for e in es) else "multiclass"
    if dataset == "audioset":
        task = "multilabel"
    # Feature widths from the first readable clip of the training split.
    a_dim = v_dim = None
    for e in splits["train"] + splits["test"]:
        a, _, _ = _load(e.afeat, NUM_STEPS) if a_dim is None else (None, 0, None)
        v, _, _ = _load(e.vfeat, NUM_STEPS) if v_dim is None else (None, 0, None)
        a_dim = a_dim or (a.shape[1] if a is not None else None)
        v_dim = v_dim or (v.shape[1] if v is not None else None)
        if a_dim and v_dim:
            break
    if not (a_dim and v_dim):
        raise UserError("no readable audio and video feature files: check the afeat/vfeat paths "
                        "(use --feature-root for relative paths)")
    sources = {"train_json": {"file": str(train_json), "sha256": _sha256(Path(train_json))},
               "test_json": {"file": str(test_json), "sha256": _sha256(Path(test_json))},
               "labels_csv": {"file": str(labels_csv), "sha256": _sha256(labels_csv)}}
    extractor = {
        "audio": {"name": "uavm-released", "model": "ConvNeXt-Base, 1-channel stem, fine-tuned on the dataset by "
                  "the UAVM authors", "features": "features stage, mean over frequency", "released_dtype": "float32"},
        "video": {"name": "uavm-released", "model": "torchvision convnext_base (ImageNet), 3 fps, short side 224",
                  "features": "features stage, spatial mean", "released_dtype": "float16"},
        "settings": {"num_steps": NUM_STEPS, "importer_version": IMPORTER_VERSION},
    }
    key = config_hash(extractor, {k: v["sha256"] for k, v in sources.items()}, {"dataset": dataset})
    manifest = fmt.Manifest(
        dataset=dataset, task=task, num_classes=len(classes), num_steps=NUM_STEPS, audio_dim=int(a_dim),
        video_dim=int(v_dim), key=key, extractor=extractor,
        provenance={"source": "UAVM authors' released features (YuanGongND/uavm)", "files": sources,
                    "weights_csv": weights, "row_order": "as in the datafile JSONs"})
    out = Path(out)
    if (out / fmt.MANIFEST).exists():
        old = json.loads((out / fmt.MANIFEST).read_text())
        if old.get("key") == key:
            return {"cache": str(out), "key": key, "complete": True, "info": old.get("info", {})}
        raise UserError(f"{out}: a finished cache with other inputs is there; remove it or choose another --out")
    writer = CacheWriter(out, manifest, classes)
    fail_path = out / "failures.jsonl"
    from tqdm import tqdm

    counts = {"clips": 0, "failed": 0, "no_audio": 0, "no_video": 0, "padded": 0, "cut": 0}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, open(fail_path, "a") as fail_log:
        for name, entries in splits.items():
            labels = np.zeros((len(entries), len(classes)), np.uint8)
            for i, e in enumerate(entries):
                labels[i, list(e.labels)] = 1
            sw = writer.create_split(name, [e.id for e in entries], labels, with_onsets=False, extras=EXTRAS)
            pending = sw.pending()
            bar = tqdm(total=len(pending), unit="clip", desc=f"import {name}", disable=not progress, file=sys.stderr)
            for start in range(0, len(pending), CHUNK):
                rows = pending[start:start + CHUNK]
                loaded = list(pool.map(lambda r, es=entries: (_load(es[r].afeat, NUM_STEPS),
                                                               _load(es[r].vfeat, NUM_STEPS)), rows))
                n = len(rows)
                audio = np.zeros((n, NUM_STEPS, a_dim), np.float16)
                video = np.zeros((n, NUM_STEPS, v_dim), np.float16)
                present = np.zeros((n, 2), bool)
                flags = np.zeros(n, np.uint8)
                a_steps = np.zeros(n, np.int32)
                v_steps = np.zeros(n, np.int32)
                for j, (row, ((a, an, aerr), (v, vn, verr))) in enumerate(zip(rows, loaded)):
                    if a is not None and a.shape[1] != a_dim:
                        a, aerr = None, f"{a.shape[1]}-d features, the cache is {a_dim}-d"
                    if v is not None and v.shape[1] != v_dim:
                        v, verr = None, f"{v.shape[1]}-d features, the cache is {v_dim}-d"
                    if a is not None:
                        audio[j] = a.astype(np.float16)
                        present[j, 0] = True
                        a_steps[j] = an
                    if v is not None:
                        video[j] = v.astype(np.float16)
                        present[j, 1] = True
                        v_steps[j] = vn
                    e = entries[row]
                    for kind, err, p in (("audio", aerr, e.afeat), ("video", verr, e.vfeat)):
                        if err:
                            fail_log.write(json.dumps({"split": name, "row": int(row), "id": e.id, "modality": kind,
                                                       "path": p, "reason": err}) + "\n")
                    if a is None and v is None:
                        flags[j] = FLAG_FAILED
                fail_log.flush()
                sw.write(rows, audio, video, present=present, flags=flags, audio_steps=a_steps, video_steps=v_steps)
                counts["clips"] += n
                bar.update(n)
            bar.close()
    info = _info(writer)
    writer.finalize(info)
    record_validation(out)  # the stratified hold-out (VGGSound/AudioSet have no official validation split)
    if fail_path.exists() and fail_path.stat().st_size == 0:
        fail_path.unlink()
    return {"cache": str(out), "key": key, "this_run": counts, "info": info}


def _info(writer: CacheWriter) -> dict[str, Any]:
    tot = {"clips": 0, "done": 0, "failed": 0, "no_audio": 0, "no_video": 0, "padded": 0, "cut": 0}
    per = {}
    for name, sw in writer.splits.items():
        flags = np.asarray(sw.extras["flags"])
        ok = (flags & FLAG_FAILED) == 0
        present = np.asarray(sw.present)
        a_n = np.asarray(sw.extras["audio_steps"])
        v_n = np.asarray(sw.extras["video_steps"])
        c = {"clips": sw.size, "done": int(np.asarray(sw.done).sum()), "failed": int((~ok).sum()),
             "no_audio": int((ok & ~present[:, 0]).sum()), "no_video": int((ok & ~present[:, 1]).sum()),
             "padded": int((((a_n < NUM_STEPS) & present[:, 0]) | ((v_n < NUM_STEPS) & present[:, 1])).sum()),
             "cut": int(((a_n > NUM_STEPS) | (v_n > NUM_STEPS)).sum())}
        per[name] = c
        for k in tot:
            tot[k] += c[k]
    return {"counts": tot, "splits": per,
            "steps_note": f"features padded or cut to {NUM_STEPS} steps (the authors' audio files from 1000 "
                          f"frames have 31; their loader keeps 30)"}
