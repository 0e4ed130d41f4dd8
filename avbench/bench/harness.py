"""``avbench bench`` as a library call: throughput, latency, memory, FLOPs and MFU of one strategy,
through the engine's own training step and data path.

What is timed is exactly what ``avbench run`` executes (``Engine.make_batch``, ``Engine.train_step``,
``BatchSource``), so a figure here is a figure for real training. Order of one run:

1. the device's matmul rate per precision (the MFU denominator), measured before and after, and on a
   shared CPU also sampled between timed rounds;
2. optionally the largest batch that fits (``find_batch_size``: never a silent fallback);
3. train: one step under the FLOP counter, warm-up, then timed rounds that interleave one step each of
   the fast path on pre-made batches, the fast path on batches from the cache (the data path's
   overhead is the difference) and, optionally, the reference configuration (fp32, explicit softmax
   attention); then the gather + augmentation work alone, and optionally one whole epoch;
4. inference: ``predict`` on the fused column (or the one the strategy supports).

Over 400 lines on purpose: the four steps share the engine, the rate probe and the interleaved timing
rounds, and each step is one function here; splitting them would pass that state between modules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from avbench import config as cfgmod
from avbench import fsguard, results
from avbench.bench.flops import count_flops
from avbench.bench.peak import PeakMemory, RateProbe, current_rss, default_sizes, matmul_rate
from avbench.bench.timing import load_average, synchronize, time_rounds
from avbench.cache.format import Manifest
from avbench.cache.writer import CacheWriter
from avbench.errors import UserError
from avbench.nn.transformer import Attention
from avbench.resolve import RunRequest, resolve
from avbench.tracking import TAG_KIND, TAG_STRATEGY, Tracker
from avbench.train.engine import Engine, TrainStep
from avbench.train.process import autocast, describe_device, set_seed

MODES = ("train", "infer", "both")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass
class BenchRequest:
    strategy: str
    dataset: str | None = None
    cache: str | None = None
    synthetic: bool = False
    device: str = "cpu"
    batch_size: int | None = None  # None: the recipe's
    amp: str | None = None  # auto, bf16, fp16, fp32; None: the recipe's (auto: avbench.hardware decides)
    compile: bool = False
    mode: str = "both"
    warmup: int | None = None  # None: 2 on CPU, 10 on CUDA
    steps: int | None = None  # timed steps per window; None: 5 on CPU, 50 on CUDA
    find_batch_size: bool = False
    max_batch_size: int = 4096
    reference: bool = False  # also time fp32 + reference attention in the same run
    data_path: bool = True
    full_epoch: bool = False  # also time one whole training epoch, data included
    stage: str | None = None  # multi-stage strategies: which stage's step (default the first)
    peak_sizes: tuple[int, ...] | None = None  # square matmul sizes for the rate (None: 1024, 2048 CPU; 8192 CUDA)
    peak_seconds: float = 0.25  # per timing window of that measurement
    overrides: dict[str, str] = field(default_factory=dict)
    cache_root: str | None = None
    seed: int = 0
    progress: bool = True


@dataclass
class SyntheticSpec:
    """``--synthetic`` features: random, VGGSound-shaped by default (T 30, 1024-d, 309 classes)."""

    clips: int = 0  # training clips; 0 = enough for the timed windows
    test_clips: int = 0  # 0 = one batch
    steps: int = 30
    audio_dim: int = 1024
    video_dim: int = 1024
    classes: int = 309
    multilabel: bool = False
    seed: int = 0


def write_synthetic_cache(path: Path, spec: SyntheticSpec, train: int, test: int) -> Path:
    """A cache of random features (written in chunks; labels one class per clip, or 1-3 multilabel)."""
    manifest = Manifest(dataset="bench-synthetic", task="multilabel" if spec.multilabel else "multiclass",
                        num_classes=spec.classes, num_steps=spec.steps, audio_dim=spec.audio_dim,
                        video_dim=spec.video_dim, key=f"bench-synthetic-{spec.seed}",
                        extractor={"audio": {"name": "random"}, "video": {"name": "random"}},
                        info={"synthetic": dataclasses.asdict(spec)})
    writer = CacheWriter(path, manifest, [(f"c{i}", f"class {i}") for i in range(spec.classes)], overwrite=True)
    rng = np.random.default_rng(spec.seed)
    for name, n in (("train", train), ("test", test)):
        labels = np.zeros((n, spec.classes), np.uint8)
        labels[np.arange(n), rng.integers(0, spec.classes, n)] = 1
        if spec.multilabel:
            extra = rng.integers(0, spec.classes, (n, 2))
            keep = rng.random((n, 2)) < 0.5
            for j in range(2):
                labels[np.arange(n)[keep[:, j]], extra[keep[:, j], j]] = 1
        sw = writer.create_split(name, [f"{name}_{i:07d}" for i in range(n)], labels)
        # One random block of clips, rolled differently for every chunk: values do not matter for
        # timing, and a VGGSound-size cache (184k clips, 22 GB) is then written at disk speed.
        chunk = min(n, 1024)
        a0 = rng.standard_normal((chunk, spec.steps, spec.audio_dim), dtype=np.float32).astype(np.float16)
        v0 = rng.standard_normal((chunk, spec.steps, spec.video_dim), dtype=np.float32).astype(np.float16)
        for j, s in enumerate(range(0, n, chunk)):
            rows = np.arange(s, min(n, s + chunk))
            a, v = np.roll(a0, j, axis=0)[: len(rows)], np.roll(v0, 3 * j, axis=0)[: len(rows)]
            sw.write(rows, a, v, onsets=rng.random((len(rows), spec.steps)) < 0.1)
    writer.finalize()
    return path


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.OutOfMemoryError):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def _free_cuda(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def run_bench(req: BenchRequest) -> dict[str, Any]:
    """Resolve the strategy and data exactly as ``avbench run`` does, then benchmark (see module doc)."""
    if req.mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, got '{req.mode}'")
    if req.amp is not None and req.amp not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{req.amp}'")
    if req.batch_size is not None and req.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if sum([req.synthetic, req.dataset is not None, req.cache is not None]) != 1:
        raise UserError("give exactly one of --dataset NAME, --cache PATH or --synthetic")
    for name in ("warmup", "steps"):
        v = getattr(req, name)
        if v is not None and v < (0 if name == "warmup" else 1):
            raise UserError(f"--{name} must be at least {0 if name == 'warmup' else 1}")
    if req.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {req.device}: CUDA is not available on this machine")
    tmp = None
    try:
        overrides = dict(req.overrides)
        source: dict[str, Any]
        if req.synthetic:
            data = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("data.")}
            overrides = {k: v for k, v in overrides.items() if not k.startswith("data.")}
            spec = cfgmod.apply_overrides(SyntheticSpec(), data, where="--synthetic features (data.*)")
            bs_hint = req.batch_size or int(overrides.get("train.batch_size", overrides.get("batch_size", 144)))
            cap = req.max_batch_size if req.find_batch_size else bs_hint
            train = spec.clips or max(4 * bs_hint, 2 * cap)
            test = spec.test_clips or bs_hint
            tmp = tempfile.TemporaryDirectory(prefix="avbench-bench-")
            fsguard.check_resources((train + test) * spec.classes + 8 * min(train, 1024) * spec.steps * (spec.audio_dim + spec.video_dim), (train + test) * spec.steps * (2 * (spec.audio_dim + spec.video_dim) + 1), tmp.name, f"--synthetic features for batch size {bs_hint} ({train} + {test} clips)")  # noqa: E501 (issue 24)
            path = write_synthetic_cache(Path(tmp.name) / "cache", spec, train, test)
            rreq = RunRequest(strategy=req.strategy, cache=str(path), overrides=overrides, device=req.device,
                                     cache_root=req.cache_root, progress=req.progress)
            source = {"kind": "synthetic", **dataclasses.asdict(spec), "clips": train, "test_clips": test}
        else:
            rreq = RunRequest(strategy=req.strategy, dataset=req.dataset, cache=req.cache, overrides=overrides,
                                     device=req.device, cache_root=req.cache_root, progress=req.progress)
            source = {"kind": "dataset" if req.dataset else "cache", "name": req.dataset or req.cache}
        resolved = resolve(rreq)
        return _bench(req, resolved, source)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _bench(req: BenchRequest, res: Any, source: dict[str, Any]) -> dict[str, Any]:
    device = torch.device(req.device)
    cuda = device.type == "cuda"
    warmup = req.warmup if req.warmup is not None else (10 if cuda else 2)
    steps = req.steps if req.steps is not None else (50 if cuda else 5)
    if req.compile:
        warmup = max(warmup, 4)  # compilation happens here, for every branch a step may take
    recipe = res.recipe
    changes: dict[str, Any] = {"compile": req.compile, "drop_last": True}
    if req.batch_size is not None:
        changes["batch_size"] = req.batch_size
    if req.amp is not None:
        changes["amp"] = req.amp
    recipe = dataclasses.replace(recipe, **changes)
    m = res.cache.manifest
    source.update({"dataset": m.dataset, "num_steps": m.num_steps, "audio_dim": m.audio_dim,
                   "video_dim": m.video_dim, "num_classes": m.num_classes, "task": m.task})
    set_seed(req.seed)
    strategy = res.strategy_cls(res.strategy_cfg, res.cache.features, res.cache.task)
    t0 = time.perf_counter()
    engine = Engine(strategy, res.cache, recipe, seed=req.seed, device=device, progress=False)
    synchronize(device)
    setup_s = time.perf_counter() - t0  # includes copying resident splits to the device
    stage = req.stage or strategy.stages[0]
    if stage not in strategy.stages:
        raise UserError(f"{strategy.name} has no stage '{stage}' (stages: {', '.join(strategy.stages)})")
    for s in strategy.stages[: strategy.stages.index(stage) + 1]:
        strategy.begin_stage(s)
    n_train = len(engine.train_split)
    load_before = load_average()
    recipe = engine.recipe  # "auto" resolved by the engine
    # The rate of the precision trained in and of fp32 (never of an emulated bf16: minutes per product).
    precisions = sorted({recipe.amp, "fp32"})
    rates = {p: {"before": matmul_rate(device, p, req.peak_sizes, req.peak_seconds)} for p in precisions}
    # On a shared CPU the rate is also sampled between timed rounds (GPUs are not time-shared).
    probe = None if cuda else RateProbe(device, precisions, req.peak_sizes, seconds=req.peak_seconds)

    out: dict[str, Any] = {
        "strategy": strategy.name, "strategy_target": req.strategy, "stage": stage,
        "config": dataclasses.asdict(res.strategy_cfg), "source": source,
        "device": str(device), "device_name": describe_device(device), "threads": torch.get_num_threads(),
        "precision": recipe.amp, "precision_reason": engine.precision_reason, "compile": recipe.compile,
        "parameters": int(strategy.num_parameters()),
        "trainable_parameters": int(sum(p.numel() for p in strategy.trainable_parameters())),
        "warmup_steps": warmup, "timed_steps": steps, "batch_size_search": None,
    }
    if req.mode in ("train", "both"):
        if req.find_batch_size:
            bs, tried = find_batch_size(engine, recipe.batch_size, min(req.max_batch_size, n_train))
            engine.set_batch_size(bs)
            out["batch_size_search"] = tried
        elif engine.recipe.batch_size > n_train:
            raise UserError(f"--batch-size {engine.recipe.batch_size} is larger than the train split "
                            f"({n_train} clips); lower it or use --find-batch-size")
        out["batch_size"] = engine.recipe.batch_size
        out.update(bench_train(engine, warmup, steps, req.data_path, req.reference, req.full_epoch, probe))
        out["data"]["engine_setup_s"] = setup_s
    else:
        out["batch_size"] = recipe.batch_size
    if req.mode in ("infer", "both"):
        out["infer"] = bench_infer(engine, out["batch_size"], warmup, steps, probe)
    for p in precisions:  # the rate again after the windows: the host's load may have changed
        rates[p]["after"] = matmul_rate(device, p, req.peak_sizes, req.peak_seconds)
        if probe is not None and probe.samples[p]:
            rates[p]["during_median"] = probe.median(p)
            rates[p]["during"] = probe.samples[p]
    # The MFU denominator: the rate while the model was timed (CPU), else the best of before/after.
    peaks = {p: r.get("during_median") or max(r["before"], r["after"]) for p, r in rates.items()}
    out["matmul_flops_per_s"] = peaks
    out["matmul_rate_samples"] = rates
    out["matmul_sizes"] = list(req.peak_sizes or default_sizes(device))
    for key in ("train", "infer", "reference"):
        if key in out:
            r = out[key]
            peak = peaks.get(r["precision"]) or peaks["fp32"]
            r["mfu"] = r["achieved_flops_per_s"] / peak if peak > 0 else float("nan")
            r["mfu_of"] = f"{r['precision']} matmul {peak / 1e9:.0f} GFLOP/s"
    if "reference" in out:
        out["reference"]["speedup"] = out["train"]["clips_per_s"] / out["reference"]["clips_per_s"]
    out["load_average"] = {"before": load_before, "after": load_average()}
    out["environment"] = results.environment()
    out["recipe"] = dataclasses.asdict(engine.recipe)
    return out


# --- pieces ---------------------------------------------------------------------------------------
def _plans(engine: Any, count: int, step0: int = 0) -> list[Any]:
    """``count`` consecutive training steps of the engine's own sampling, over as many epochs as needed."""
    plans: list[Any] = []
    epoch = 0
    labelled = engine.strategy.stage_uses_labels(engine.strategy.stage)
    while len(plans) < count:
        glob = engine.global_batches(epoch)
        if not glob:
            raise UserError(f"no full batch of {engine.recipe.batch_size} in the train split "
                            f"({len(engine.train_split)} clips)")
        for g in glob[: count - len(plans)]:
            plans.append(engine.plan_step(step0 + len(plans), g, labelled))
        epoch += 1
    return plans


def _gather(engine: Any, rows: np.ndarray) -> dict[str, torch.Tensor]:
    src = engine.train_src
    if src.resident is not None:
        return src.gather_resident(rows)
    return {k: v.to(engine.device, non_blocking=True) for k, v in src.split.gather(rows).items()}


def _guard_oom(engine: Any, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except BaseException as e:
        if _is_oom(e):
            _free_cuda(engine.device)
            raise UserError(f"batch size {engine.recipe.batch_size} does not fit on {engine.device} (out of "
                            f"memory); lower --batch-size or use --find-batch-size") from None
        raise


def _attention_kind(strategy: Any, device: torch.device) -> str:
    """The attention implementation(s) the strategy's avbench blocks run at its T (sdpa, bmm, reference)."""
    n = strategy.features.num_steps
    kinds = {m.kernel(n, device) for m in strategy.modules() if isinstance(m, Attention)}
    return "/".join(sorted(kinds)) or "n/a"


class _Reference:
    """Switches the engine to the reference configuration for the duration of a ``with`` block: fp32,
    explicit softmax attention, eager, and Adam's per-parameter loop (the UAVM reference builds a plain
    ``torch.optim.Adam``, which on a CPU is that loop, not the fused kernel). Same model, weights,
    optimizer state and batches."""

    def __init__(self, engine: Any, optimizer: torch.optim.Optimizer):
        self.engine = engine
        self.attn = [m for m in engine.strategy.modules() if isinstance(m, Attention)]
        self.recipe = dataclasses.replace(engine.recipe, amp="fp32", compile=False)
        self.module = TrainStep(engine.strategy)
        self.groups = optimizer.param_groups

    def __enter__(self) -> "_Reference":
        e = self.engine
        self.saved = ([m.fused for m in self.attn], [(g.get("fused"), g.get("foreach")) for g in self.groups])
        for m in self.attn:
            m.fused = False
        for g in self.groups:
            g["fused"], g["foreach"] = False, False
        self.stack = contextlib.ExitStack()  # the engine's own switches, undone in reverse order
        self.stack.enter_context(e.using_recipe(self.recipe))
        self.stack.enter_context(e.using_step_module(self.module))
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stack.close()
        fused, opt = self.saved
        for m, f in zip(self.attn, fused):
            m.fused = f
        for g, (f, fe) in zip(self.groups, opt):
            g["fused"], g["foreach"] = f, fe


class _Tracked:
    """A step function that also records the peak memory of its steps (reset before, read after)."""

    def __init__(self, fn: Callable[[int], int], mem: PeakMemory):
        self.fn, self.mem, self.peak = fn, mem, 0

    def __call__(self, i: int) -> int:
        self.mem.reset()
        n = self.fn(i)
        self.peak = max(self.peak, self.mem.read())
        return n


def bench_train(engine: Any, warmup: int, steps: int, data_path: bool, reference: bool, full_epoch: bool,
                probe: RateProbe | None) -> dict[str, Any]:
    """Train step figures (``train``), the reference side by side (``reference``) and the data path
    (``data``): the configurations run interleaved, one step each per round."""
    device = engine.device
    strategy = engine.strategy
    strategy.train()
    optimizer = engine.make_optimizer()
    k = max(1, min(steps, 4))
    plans = _plans(engine, k + (steps if data_path else 0))
    premade = [engine.make_batch(_gather(engine, p.fetch), train=True, step=i, plan=p) for i, p in enumerate(plans[:k])]
    attention = _attention_kind(strategy, device)
    # One step under the FLOP counter, uncompiled (the counter sees every matmul of forward and backward).
    engine.wrap_step_module(plain=True)
    flops, _ = _guard_oom(engine, lambda: count_flops(lambda: engine.train_step(premade[0], 0, optimizer)))
    engine.wrap_step_module()
    counter = {"step": 1}

    def fast(i: int) -> int:
        b = premade[i % k]
        engine.train_step(b, counter["step"], optimizer, plans[i % k].loss_scale)
        counter["step"] += 1
        return b.size

    _guard_oom(engine, lambda: [fast(i) for i in range(warmup)])
    mem = PeakMemory(device)
    fns: dict[str, _Tracked] = {"train": _Tracked(fast, mem)}
    it: Iterator[dict[str, torch.Tensor]] | None = None
    if data_path:
        live = plans[k:]
        it = iter(engine.train_src.iterate([p.fetch for p in live]))

        def cached(i: int) -> int:
            b = engine.make_batch(next(it), train=True, step=counter["step"], plan=live[i])
            engine.train_step(b, counter["step"], optimizer, live[i].loss_scale)
            counter["step"] += 1
            return b.size

        fns["cache"] = _Tracked(cached, mem)
    ref = _Reference(engine, optimizer) if reference else None
    ref_flops = 0
    if ref is not None:
        def reference_step(i: int) -> int:
            with ref:
                return fast(i)

        with ref:
            ref_flops, _ = count_flops(lambda: engine.train_step(premade[0], 0, optimizer))
            fast(0)  # warm-up
        fns["reference"] = _Tracked(reference_step, mem)
    try:
        wins = _guard_oom(engine, lambda: time_rounds(fns, steps, device, probe.sample if probe else None))
    finally:
        if it is not None:
            it.close()  # type: ignore[attr-defined]
    size = premade[0].size

    def figures(win: Any, flops_step: int, precision: str, attn: str, peak: int, adam: str) -> dict[str, Any]:
        return {**win.summary(), "precision": precision, "attention": attn, "optimizer": adam, "batch_size": size,
                "compile": engine.recipe.compile if precision == engine.recipe.amp else False,
                "flops_per_clip": flops_step / size, "flops_per_step": flops_step,
                "achieved_flops_per_s": flops_step / size * win.items_per_s, "peak_memory_bytes": peak,
                "memory_kind": mem.kind}

    fused_adam = bool(optimizer.param_groups and optimizer.param_groups[0].get("fused"))
    out: dict[str, Any] = {"train": figures(wins["train"], flops, engine.recipe.amp, attention, fns["train"].peak,
                                            "adam (fused)" if fused_adam else "adam (per-parameter loop)")}
    if ref is not None:
        out["reference"] = figures(wins["reference"], ref_flops, "fp32", "reference", fns["reference"].peak,
                                   "adam (per-parameter loop)")
    data: dict[str, Any] = {"source": "device" if engine.train_src.is_resident else "memmap+prefetch"}
    if data_path:
        premade_ms = out["train"]["step_ms_mean"]
        cache_ms = wins["cache"].summary()["step_ms_mean"]
        synchronize(device)
        t0 = time.perf_counter()
        for i, p in enumerate(plans[k:]):  # the data work alone: gather + recipe augmentations
            engine.make_batch(_gather(engine, p.fetch), train=True, step=i, plan=p)
        synchronize(device)
        data_ms = 1e3 * (time.perf_counter() - t0) / steps
        data.update({"premade_step_ms": premade_ms, "cache_step_ms": cache_ms,
                     "cache_clips_per_s": wins["cache"].items_per_s,
                     "overhead_pct": 100.0 * (cache_ms - premade_ms) / premade_ms,
                     "gather_augment_ms": data_ms, "gather_augment_pct_of_step": 100.0 * data_ms / premade_ms})
    if full_epoch:
        synchronize(device)
        t0 = time.perf_counter()
        _, n_clips, _ = engine.train_epoch(optimizer, engine.strategy.stage, 0, counter["step"])
        synchronize(device)
        dt = time.perf_counter() - t0
        data["epoch"] = {"seconds": dt, "clips": n_clips, "clips_per_s": n_clips / dt if dt > 0 else float("nan"),
                         "train_split": len(engine.train_split), "train_rows": len(engine.train_rows)}
    out["data"] = data
    return out


def bench_infer(engine: Any, batch_size: int, warmup: int, steps: int, probe: RateProbe | None) -> dict[str, Any]:
    strategy = engine.strategy
    caps = strategy.capabilities
    column = "fusion" if caps.fusion else ("audio" if caps.audio_only else "video")
    src = engine.test_src
    n = len(src)
    bs = min(batch_size, n)
    rows = [np.arange(s, s + bs) % n for s in range(0, bs * max(1, min(steps, 4)), bs)]
    batches = []
    for r in rows:
        raw = (src.gather_resident(r) if src.resident is not None
               else {k: v.to(engine.device) for k, v in src.split.gather(r).items()})
        batches.append(engine.make_batch(raw, train=False))
    predict = strategy.predict
    if engine.recipe.compile:
        predict = torch.compile(strategy.predict)
    strategy.eval()

    def call(b: Any, fn: Callable = predict) -> Any:
        a = b.audio if column in ("audio", "fusion") else None
        v = b.video if column in ("video", "fusion") else None
        # The test split's onsets, as evaluation passes them (train/evaluate.py): without them an
        # onset-aware strategy (event_layers) would time its no-onset fallback instead.
        extra = {"onsets": b.onsets} if caps.onsets else {}
        with torch.no_grad(), autocast(engine.device, engine.recipe.amp):
            return fn(a, v, **extra)

    flops, _ = _guard_oom(engine, lambda: count_flops(lambda: call(batches[0], strategy.predict)))
    for i in range(warmup):
        call(batches[i % len(batches)])
    mem = PeakMemory(engine.device)
    step = _Tracked(lambda i: (call(batches[i % len(batches)]), bs)[1], mem)
    win = time_rounds({"infer": step}, steps, engine.device, probe.sample if probe else None)["infer"]
    return {**win.summary(), "column": column, "precision": engine.recipe.amp, "compile": engine.recipe.compile,
            "attention": _attention_kind(strategy, engine.device), "batch_size": bs, "flops_per_clip": flops / bs,
            "achieved_flops_per_s": flops / bs * win.items_per_s, "peak_memory_bytes": step.peak,
            "memory_kind": mem.kind}


def find_batch_size(engine: Any, start: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """The largest batch (start x 2^k, or start / 2^k when start does not fit) that trains one step.

    CUDA: an out-of-memory error ends the search. CPU: the host would swap or kill the process long
    before raising, so a size is not tried when its projected peak (twice the last one's step
    memory) exceeds 80% of the memory the process can still use.
    """
    device = engine.device
    engine.wrap_step_module(plain=True)
    engine.strategy.train()
    optimizer = engine.make_optimizer()
    mem = PeakMemory(device)
    tried: list[dict[str, Any]] = []

    def attempt(b: int) -> tuple[bool, int]:
        engine.set_batch_size(b)
        try:
            plan = _plans(engine, 1)[0]
            batch = engine.make_batch(_gather(engine, plan.fetch), train=True, step=0, plan=plan)
            before = current_rss() if device.type != "cuda" else 0
            mem.reset()
            engine.train_step(batch, 0, optimizer)
            peak = mem.read()
            del batch
            tried.append({"batch_size": b, "fits": True, "peak_memory_bytes": peak})
            return True, max(0, peak - before)
        except BaseException as e:
            if not _is_oom(e):
                raise
            optimizer.zero_grad(set_to_none=True)
            _free_cuda(device)
            tried.append({"batch_size": b, "fits": False, "error": type(e).__name__})
            return False, 0

    if start > limit:
        start = limit
    b = start
    ok, step_mem = attempt(b)
    while not ok and b > 1:
        b //= 2
        ok, step_mem = attempt(b)
    if not ok:
        raise UserError(f"not even a batch of 1 fits on {device}")
    while 2 * b <= limit:
        if device.type != "cuda":
            import psutil

            if current_rss() + 2 * step_mem > 0.8 * (current_rss() + psutil.virtual_memory().available):
                tried.append({"batch_size": 2 * b, "fits": False, "error": "projected to exceed host memory"})
                break
        ok, nxt = attempt(2 * b)
        if not ok:
            break
        b, step_mem = 2 * b, nxt
    engine.set_batch_size(b)
    optimizer.zero_grad(set_to_none=True)
    return b, tried


def log_to_mlflow(result: dict[str, Any], results_dir: str) -> str:
    """One run in the ``avbench-bench`` experiment: settings as params, figures as metrics, the JSON."""
    tracker = Tracker(results_dir)
    exp = tracker.experiment_id("bench")
    run = tracker.client.create_run(exp, run_name=f"bench-{result['strategy']}-{result['device']}",
                                    tags={TAG_KIND: "bench", TAG_STRATEGY: result["strategy"]})
    rid = run.info.run_id
    params = {"strategy": result["strategy"], "device": result["device"], "device_name": result["device_name"],
              "precision": result["precision"], "precision_reason": result.get("precision_reason", ""),
              "compile": result["compile"], "batch_size": result["batch_size"],
              "threads": result["threads"], "source": result["source"].get("kind"),
              **{f"model.{k}": v for k, v in result["config"].items()}}
    tracker.log_params(rid, params)
    metrics: dict[str, float] = {"parameters": result["parameters"]}
    for section in ("train", "infer", "reference", "data"):
        for k, v in (result.get(section) or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                metrics[f"{section}/{k}"] = v
    for p, v in result["matmul_flops_per_s"].items():
        metrics[f"matmul_flops_per_s/{p}"] = v
    tracker.log_metrics(rid, metrics)
    tracker.log_json(rid, "bench.json", result)
    tracker.finish(rid)
    return rid
