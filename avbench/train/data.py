"""Feeding batches to the device without stalling it.

Two paths, chosen per split: when the split fits, it is copied to the device once and every batch is
an index into device memory (no host work per step); otherwise a background thread gathers the next
batches from the memmap into pinned memory while the current step runs.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator

import numpy as np
import psutil
import torch
from torch import Tensor

from avbench.cache.reader import CacheSplit, DeviceSplit

PREFETCH = 3


def fits_on_device(split: CacheSplit, device: torch.device, fraction: float = 0.5) -> bool:
    """True when the split takes at most ``fraction`` of the device's free memory."""
    need = split.nbytes()
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return need <= fraction * free
    return need <= fraction * psutil.virtual_memory().available


class BatchSource:
    """Yields dicts of device tensors (audio, video, labels, present, index, onsets) per index batch."""

    def __init__(self, split: CacheSplit, device: torch.device, resident: str = "auto", share: float = 1.0):
        """``resident``: "on", "off" or "auto" (when the split takes at most half of ``share`` of the
        device's free memory; ranks that share one host's memory pass ``share = 1 / ranks``)."""
        self.split = split
        self.device = torch.device(device)
        if resident == "on" or (resident == "auto" and fits_on_device(split, self.device, 0.5 * share)):
            self.resident: DeviceSplit | None = split.to_device(self.device)
        else:
            self.resident = None

    @property
    def is_resident(self) -> bool:
        return self.resident is not None

    def __len__(self) -> int:
        return len(self.split)

    def iterate(self, index_batches: Iterable[np.ndarray]) -> Iterator[dict[str, Tensor]]:
        if self.resident is not None:
            for idx in index_batches:
                yield self.gather_resident(idx)
            return
        yield from _prefetch(self.split, list(index_batches), self.device)


    def gather_resident(self, idx: np.ndarray) -> dict[str, Tensor]:
        """Rows of the resident split. On CPU through NumPy's take, several times faster than torch's
        advanced indexing of float16 rows there; on a GPU by indexing in device memory."""
        res = self.resident
        assert res is not None
        if self.device.type != "cpu":  # indices through pinned memory: no host sync per batch
            index = torch.from_numpy(np.asarray(idx, dtype=np.int64))
            if self.device.type == "cuda":
                index = index.pin_memory()
            return res.gather(index.to(self.device, non_blocking=True))
        idx = np.asarray(idx, dtype=np.int64)
        out = {k: torch.from_numpy(np.take(getattr(res, k).numpy(), idx, axis=0))
               for k in ("audio", "video", "labels", "present")}
        out["index"] = torch.from_numpy(idx)
        if res.onsets is not None:
            out["onsets"] = torch.from_numpy(np.take(res.onsets.numpy(), idx, axis=0))
        return out


def _prefetch(split: CacheSplit, index_batches: list[np.ndarray], device: torch.device) -> Iterator[dict[str, Tensor]]:
    pin = device.type == "cuda"
    q: queue.Queue = queue.Queue(maxsize=PREFETCH)
    stop = threading.Event()

    def work() -> None:
        try:
            for idx in index_batches:
                if stop.is_set():
                    return
                raw = split.gather(idx)
                if pin:
                    raw = {k: v.pin_memory() for k, v in raw.items()}
                q.put(raw)
            q.put(None)
        except BaseException as e:  # surface loader errors in the training thread
            q.put(e)

    thread = threading.Thread(target=work, name="avbench-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield {k: v.to(device, non_blocking=True) for k, v in item.items()}
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
