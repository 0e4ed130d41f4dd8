"""``synth``: an embedded diagnostic dataset, generated from a seed and written through the cache writer.

It is built to make fusion behaviour visible, not to be hard. Every class has an audio prototype and a
visual prototype; every clip draws an event type from the taxonomy of paper 003 (event-specific
fusion layers), and the event type decides at which of the T steps class evidence appears in each
modality:

============  ==============================  ==============================
event type    audio evidence at               video evidence at
============  ==============================  ==============================
continuous    every step                      every step
instant       a short window (10% of T)       the same window
rhythmic      periodic onsets (onsets.npy)    the same steps
audio_only    every step                      nowhere
visual_only   nowhere                         every step
============  ==============================  ==============================

Around the evidence, both modalities carry noise, a clip-level background and single-modality
distractors of other classes, so pooling that ignores *when* evidence occurs pays for it. Audio and
video are drawn from different distributions (different offsets and noise spectra): a modality probe
at the input layer separates them perfectly, which the UAVM representation analyses rely on.

With ``secondary_rate > 0`` a clip may also carry a second class (its own event type); the task is
then multilabel, for the multi-label evaluation of paper 003.

Instance identity (``instance > 0``, on by default): every clip draws a unit vector u of
``instance_dim`` dimensions, and both modalities carry ``instance * snr`` times a fixed projection of u
(one per modality) at their event steps. Audio and video of one clip then share something beyond the
class, so A<->V instance retrieval (UAVM Fig. 4) has something to find; u is stored as the extra
``instance`` for oracle checks.

Onsets (``onsets.npy``) are the rhythmic events' exact evidence steps by default: an *oracle*, which
isolates fusion from onset-detection error. ``onset_jitter`` (max steps an onset moves),
``onset_miss`` (probability a true onset is dropped) and ``onset_false`` (per-step probability of a
false alarm, in any clip) make them look like a detector's output instead (e.g. 1, 0.2, 0.05); the
features are unchanged, only the onsets a strategy is given.

Event types depend on the class (``class_type``, default 0.5): a clip takes its class's own type
(classes go round-robin over the types ``event_mix`` allows) with that probability, else one drawn
from ``event_mix``, so every class has a true dominant event type that paper 003's per-class vote
(``avbench analyze --what event-types``) can be scored against.

The training split carries a stratified 10% validation hold-out (``val_fraction``), recorded in the
cache when it is written (avbench/cache/validation.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from avbench.cache.format import Manifest
from avbench.cache.reader import record_validation
from avbench.cache.writer import CacheWriter
from avbench.config import SEED_MAX, config_hash, in_range
from avbench.datasets.base import DatasetCard
from avbench.errors import UserError
from avbench.locks import file_lock, lock_beside

EVENT_TYPES = ("continuous", "instant", "rhythmic", "audio_only", "visual_only")
GENERATOR_VERSION = 3  # bump when generation changes numbers: it is part of the cache key


@dataclass
class SynthKnobs:
    classes: int = in_range(12, "[2, inf)")
    train_clips: int = in_range(2400, "[1, inf)")
    test_clips: int = in_range(960, "[1, inf)")
    steps: int = in_range(30, "[1, inf)")
    audio_dim: int = in_range(128, "[1, inf)")
    video_dim: int = in_range(96, "[1, inf)")
    snr: float = in_range(0.4, "[0, inf)")  # evidence norm relative to per-step noise norm
    event_mix: str = "continuous,instant,rhythmic,audio_only,visual_only"  # names, or name:weight
    instant_fraction: float = in_range(0.1, "(0, 1]")  # instant window as a fraction of T
    distractor: float = in_range(0.5, "[0, inf)")  # amplitude of single-modality distractor events, relative to snr
    secondary_rate: float = in_range(0.0, "[0, 1]")  # probability of a second labelled event (multilabel when > 0)
    instance: float = in_range(1.0, "[0, inf)")  # per-clip identity in both modalities at event steps, x snr
    instance_dim: int = in_range(8, "[1, inf)")
    onset_jitter: int = in_range(0, "[0, inf)")  # realistic onsets: max shift (steps) of a reported onset
    onset_miss: float = in_range(0.0, "[0, 1]")  # realistic onsets: probability a true onset is not reported
    onset_false: float = in_range(0.0, "[0, 1]")  # realistic onsets: per-step probability of a false alarm
    class_type: float = in_range(0.5, "[0, 1]")  # probability a clip takes its class's own event type
    val_fraction: float = in_range(0.1, "(0, 1)")  # stratified validation hold-out of the training split
    seed: int = in_range(0, "[0, inf)")


def parse_event_mix(spec: str) -> np.ndarray:
    """``"instant"`` or ``"continuous:2,instant:1"`` -> probabilities over EVENT_TYPES."""
    weights = np.zeros(len(EVENT_TYPES))
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        name, _, w = part.partition(":")
        name = name.strip().replace("-", "_")
        if name not in EVENT_TYPES:
            raise UserError(f"--set data.event_mix: unknown event type '{name}' (one of {', '.join(EVENT_TYPES)})")
        try:
            weights[EVENT_TYPES.index(name)] += float(w) if w else 1.0
        except ValueError:
            raise UserError(f"--set data.event_mix: bad weight in '{part}'") from None
    if weights.sum() <= 0 or (weights < 0).any():
        raise UserError("--set data.event_mix: weights must be non-negative and not all zero")
    return weights / weights.sum()


def _check(k: SynthKnobs) -> None:
    for name in ("classes", "train_clips", "test_clips", "steps", "audio_dim", "video_dim"):
        if getattr(k, name) < 1:
            raise UserError(f"--set data.{name} must be at least 1")
    if k.classes < 2:
        raise UserError("--set data.classes must be at least 2")
    if not 0 <= k.secondary_rate <= 1:
        raise UserError("--set data.secondary_rate must be in [0, 1]")
    if not 0 < k.instant_fraction <= 1:
        raise UserError("--set data.instant_fraction must be in (0, 1]")
    if k.onset_jitter >= k.steps:  # an onset moves within the clip: at most steps - 1
        raise UserError(f"--set data.onset_jitter={k.onset_jitter}: must be below data.steps={k.steps}")
    if k.train_clips < 2 * k.classes:  # every class needs a clip to train on and one to validate on
        raise UserError(f"--set data.classes={k.classes}: needs data.train_clips >= 2 x classes "
                        f"({2 * k.classes}), got {k.train_clips}")
    held = int(round(k.val_fraction * k.train_clips))
    if held < 1 or k.train_clips - held < 1:
        raise UserError(f"--set data.val_fraction={k.val_fraction}: holds out {held} of {k.train_clips} training "
                        f"clips; at least one must be held out and one left to train on")
    if k.seed > SEED_MAX:
        raise UserError(f"--set data.seed={k.seed}: must be at most {SEED_MAX}")


def resources(k: SynthKnobs) -> tuple[int, int]:
    """(bytes of memory, bytes of disk) generating and writing the cache takes: the larger split in
    float64 with the generator's temporaries, and every split's arrays as written (float16 features)."""
    dims = k.audio_dim + k.video_dim
    n_max = max(k.train_clips, k.test_clips)
    per_step = 8 * dims + 16 * max(k.audio_dim, k.video_dim) + 2 * dims + 8  # float64, temporaries, float16, masks
    memory = n_max * (k.steps * per_step + 2 * k.classes + 8 * k.instance_dim + 64)
    per_clip = k.steps * (2 * dims + 1) + k.classes + 4 * k.instance_dim + 2 + 3 + 24  # + ids.txt
    return memory, (k.train_clips + k.test_clips) * per_clip


def check_resources(k: SynthKnobs, path: Path) -> None:
    """Refuse (needs X, has Y) a synth cache that would not fit in memory or on disk, before generating."""
    from avbench import fsguard

    memory, disk = resources(k)
    what = (f"synth cache (data.train_clips={k.train_clips}, test_clips={k.test_clips}, steps={k.steps}, "
            f"dims {k.audio_dim}+{k.video_dim}, classes={k.classes})")
    fsguard.check_memory(memory, what)
    fsguard.check_space(path, disk, what)


def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.standard_normal(shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class _World:
    """Everything shared by the splits: prototypes and the two modalities' distributions."""

    def __init__(self, k: SynthKnobs):
        rng = np.random.default_rng([k.seed, 7919])
        self.proto_a = _unit(rng, k.classes, k.audio_dim)
        self.proto_v = _unit(rng, k.classes, k.video_dim)
        # Different distributions per modality: offsets and noise spectra.
        self.offset_a = 0.8 * _unit(rng, k.audio_dim)
        self.offset_v = 0.8 * _unit(rng, k.video_dim)
        self.scale_a = np.ones(k.audio_dim) / np.sqrt(k.audio_dim)
        spectrum = np.exp(-np.linspace(0, 2.0, k.video_dim))
        self.scale_v = spectrum / np.sqrt((spectrum ** 2).sum())
        self.mix = parse_event_mix(k.event_mix)
        # Instance identity: one fixed projection per modality of the clip's latent u (own stream,
        # so the draws above are those of generator 2).
        irng = np.random.default_rng([k.seed, 7919, 1])
        self.inst_a = _unit(irng, k.instance_dim, k.audio_dim)
        self.inst_v = _unit(irng, k.instance_dim, k.video_dim)
        # Every class has a characteristic event type (round-robin over the types the mix allows).
        allowed = np.flatnonzero(self.mix > 0)
        self.class_type = allowed[np.arange(k.classes) % len(allowed)]


def _event_masks(rng: np.random.Generator, etype: np.ndarray, k: SynthKnobs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-clip [N, T] masks of where audio / video evidence appears, and rhythmic onsets."""
    n, t = len(etype), k.steps
    ma = np.zeros((n, t), bool)
    mv = np.zeros((n, t), bool)
    onsets = np.zeros((n, t), bool)
    width = max(1, int(round(k.instant_fraction * t)))
    for i, e in enumerate(etype):
        name = EVENT_TYPES[e]
        if name == "continuous":
            ma[i] = mv[i] = True
        elif name == "instant":
            start = rng.integers(0, t - width + 1)
            ma[i, start:start + width] = mv[i, start:start + width] = True
        elif name == "rhythmic":
            period = int(rng.integers(3, 7)) if t >= 6 else 1
            phase = int(rng.integers(0, period))
            steps = np.arange(phase, t, period)
            ma[i, steps] = mv[i, steps] = True
            onsets[i, steps] = True
        elif name == "audio_only":
            ma[i] = True
        elif name == "visual_only":
            mv[i] = True
    return ma, mv, onsets


def generate_split(world: _World, k: SynthKnobs, n: int, split_seed: int) -> dict[str, np.ndarray]:
    """Generate one split: audio, video, labels, onsets, event types (deterministic in the seeds)."""
    rng = np.random.default_rng([k.seed, split_seed])
    t = k.steps
    cls = rng.integers(0, k.classes, n)
    etype = rng.choice(len(EVENT_TYPES), size=n, p=world.mix)
    own = np.random.default_rng([k.seed, split_seed, 107]).random(n) < k.class_type
    etype[own] = world.class_type[cls[own]]
    ma, mv, onsets = _event_masks(rng, etype, k)

    audio = world.offset_a + rng.standard_normal((n, t, k.audio_dim)) * world.scale_a
    video = world.offset_v + rng.standard_normal((n, t, k.video_dim)) * world.scale_v
    # A clip-level background, constant in time (a scene that is not the event).
    audio += 0.5 * _unit(rng, n, 1, k.audio_dim)
    video += 0.5 * _unit(rng, n, 1, k.video_dim)
    audio += k.snr * ma[..., None] * world.proto_a[cls][:, None, :]
    video += k.snr * mv[..., None] * world.proto_v[cls][:, None, :]

    # Distractors: another class in one modality only, at a few random steps.
    if k.distractor > 0:
        other = (cls + rng.integers(1, k.classes, n)) % k.classes
        which = rng.integers(0, 2, n)  # 0: audio distractor, 1: video distractor
        dmask = rng.random((n, t)) < 0.3
        amp = k.distractor * k.snr
        audio += amp * ((which == 0)[:, None] & dmask)[..., None] * world.proto_a[other][:, None, :]
        video += amp * ((which == 1)[:, None] & dmask)[..., None] * world.proto_v[other][:, None, :]

    instance = _unit(np.random.default_rng([k.seed, split_seed, 101]), n, k.instance_dim)
    if k.instance > 0:
        amp = k.instance * k.snr
        audio += amp * ma[..., None] * (instance @ world.inst_a)[:, None, :]
        video += amp * mv[..., None] * (instance @ world.inst_v)[:, None, :]

    labels = np.zeros((n, k.classes), np.uint8)
    labels[np.arange(n), cls] = 1
    etype2 = np.full(n, -1, np.int8)
    if k.secondary_rate > 0:
        has2 = rng.random(n) < k.secondary_rate
        cls2 = (cls + rng.integers(1, k.classes, n)) % k.classes
        e2 = rng.choice(len(EVENT_TYPES), size=n, p=world.mix)
        ma2, mv2, on2 = _event_masks(rng, e2, k)
        ma2 &= has2[:, None]
        mv2 &= has2[:, None]
        audio += k.snr * ma2[..., None] * world.proto_a[cls2][:, None, :]
        video += k.snr * mv2[..., None] * world.proto_v[cls2][:, None, :]
        onsets |= on2 & has2[:, None]
        labels[np.arange(n)[has2], cls2[has2]] = 1
        etype2[has2] = e2[has2]
    onsets = realistic_onsets(onsets, k, np.random.default_rng([k.seed, split_seed, 103]))
    return {
        "audio": audio.astype(np.float16),
        "video": video.astype(np.float16),
        "labels": labels,
        "onsets": onsets,
        "event_type": etype.astype(np.int8),
        "event_type2": etype2,
        "instance": instance.astype(np.float32),
    }


def realistic_onsets(onsets: np.ndarray, k: SynthKnobs, rng: np.random.Generator) -> np.ndarray:
    """The oracle onsets as a detector would report them: each true onset dropped with probability
    ``onset_miss``, moved by up to ``onset_jitter`` steps, plus false alarms at rate ``onset_false``.
    With all three at 0 (the default) the oracle is returned unchanged."""
    if k.onset_jitter == 0 and k.onset_miss == 0 and k.onset_false == 0:
        return onsets
    n, t = onsets.shape
    clip, step = np.nonzero(onsets & (rng.random((n, t)) >= k.onset_miss))
    step = np.clip(step + rng.integers(-k.onset_jitter, k.onset_jitter + 1, len(step)), 0, t - 1)
    out = np.zeros_like(onsets)
    out[clip, step] = True
    return out | (rng.random((n, t)) < k.onset_false)


def synth_key(k: SynthKnobs) -> str:
    return config_hash(dataclasses.asdict(k), {"generator": GENERATOR_VERSION})


def build_synth_cache(path: Path, k: SynthKnobs) -> Path:
    """Generate every split and write it through the cache writer; returns ``path``."""
    _check(k)
    world = _World(k)
    multilabel = k.secondary_rate > 0
    manifest = Manifest(
        dataset="synth", task="multilabel" if multilabel else "multiclass", num_classes=k.classes,
        num_steps=k.steps, audio_dim=k.audio_dim, video_dim=k.video_dim, key=synth_key(k),
        extractor={"audio": {"name": "synth", "version": GENERATOR_VERSION},
                   "video": {"name": "synth", "version": GENERATOR_VERSION}},
        provenance={"generator": "avbench.datasets.synth", "generator_version": GENERATOR_VERSION},
        info={"knobs": dataclasses.asdict(k), "event_types": list(EVENT_TYPES),
              "class_event_types": [EVENT_TYPES[t] for t in world.class_type]},
    )
    classes = [(f"synth_{c}", f"class {c}") for c in range(k.classes)]
    writer = CacheWriter(path, manifest, classes, overwrite=True)
    for split_seed, (name, n) in enumerate((("train", k.train_clips), ("test", k.test_clips)), start=1):
        data = generate_split(world, k, n, split_seed)
        ids = [f"{name}_{i:06d}" for i in range(n)]
        sw = writer.create_split(name, ids, data["labels"],
                                 extras={"event_type": ("int8", ()), "event_type2": ("int8", ()),
                                         "instance": ("float32", (k.instance_dim,))})
        sw.write(np.arange(n), data["audio"], data["video"], onsets=data["onsets"],
                 event_type=data["event_type"], event_type2=data["event_type2"], instance=data["instance"])
    writer.finalize()
    record_validation(path, fraction=k.val_fraction)  # the stratified hold-out, with the cache
    return path


class SynthCard(DatasetCard):
    name: ClassVar[str] = "synth"
    description: ClassVar[str] = "embedded diagnostic AV dataset (paper 003 event types), generated from a seed"
    task: ClassVar[str] = "multiclass"
    Knobs: ClassVar[type] = SynthKnobs
    # Synth is small: a higher learning rate and a smaller batch than VGGSound's recipe, so 10 epochs
    # see enough optimizer steps. Recorded in every run's params.
    recipe_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-3, "batch_size": 48}
    # CPU-sized widths; the paper configuration stays the strategies' own default.
    # MBT's paper depth (12 layers, fusion from 8) trains at ~9 clips/s here: keep its shape, shallower.
    strategy_defaults: ClassVar[dict[str, dict[str, Any]]] = {"*": {"embed_dim": 128},
                                                             "mbt": {"depth": 4, "fusion_layer": 2}}

    def cache_dir(self, cache_root: Path, knobs: Any) -> Path:
        return cache_root / "synth" / synth_key(knobs)

    def check_knobs(self, knobs: Any) -> None:
        """The knobs' own rules (beyond each field's range), for callers that check before building."""
        _check(knobs)

    def prepare(self, cache_root: Path, knobs: Any, progress: bool = True) -> Path:
        path = self.cache_dir(cache_root, knobs)
        if (path / "manifest.json").exists():
            return path
        _check(knobs)
        check_resources(knobs, path)
        # One builder per cache: others wait and reuse what it made; a builder that died (kill -9,
        # SIGBUS) released the lock with its life, and its half-written directory is rebuilt.
        with file_lock(lock_beside(path), f"generating the synth cache {path.name}"):
            if (path / "manifest.json").exists():
                return path
            return build_synth_cache(path, knobs)
