"""The strategy contract, checked on tiny random data in seconds: ``check_strategy`` (and ``avbench
check-strategy NAME``).

A strategy author runs it from their own tests (``check_strategy(MyStrategy)``), the way timm's
test_models and Optuna's sampler test kit check every model and sampler; avbench's own tests run it
over every registered strategy (tests/test_plugin_kit.py). Each check is one rule of
docs/plugins.md, and a failure names the rule:

* ``class``: both abstract methods implemented, a name, a dataclass ``Config`` (``api.contract_problem``);
* ``config``: ``Config()`` builds with every field set from the CLI's types and inside its range
  (declared with ``config.in_range`` or inferred from the field's name);
* ``train``: ``training_step`` in every stage returns a finite scalar ``loss`` whose backward reaches
  the trainable parameters, with ``batch.onsets`` set (the harness passes onsets when a cache has them);
* ``predict``: in eval mode, under ``torch.no_grad`` and autocast, logits ``[B, C]`` without grad, and
  the module left in eval mode;
* ``capabilities``: every declared column answers, every undeclared one is refused (raises) and says
  why; declared embeddings, attention maps, heads, onsets and the cross-modal protocol work;
* ``determinism``: two builds with one seed give the same weights, loss and logits;
* ``state_dict``: weights saved as avbench saves them (``torch.save``, read back ``weights_only``)
  and loaded into a differently seeded build give the same logits.

The data are tiny (6 clips, 8 steps, 16/12 feature dims, 4 classes) and a field named ``embed_dim``
is set to 16; ``overrides`` sets others (e.g. a depth) when a strategy's defaults are large.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from avbench import config as cfgmod
from avbench import registry
from avbench.api import CAPABILITY_OF, COLUMNS, Batch, FeatureSpec, Strategy, TaskSpec, contract_problem
from avbench.errors import UserError

FEATURES = FeatureSpec(audio_dim=16, video_dim=12, num_steps=8)
TASK = TaskSpec(num_classes=4)
CLIPS = 6
TINY = {"embed_dim": 16}  # set when the Config has the field: every built-in strategy is then small


@dataclass
class ContractReport:
    """What ``check_strategy`` found: the checks that passed and, per failed check, why."""

    strategy: str
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self) -> list[str]:
        return ([f"ok    {c}" for c in self.passed] + [f"FAIL  {c}: {why}" for c, why in self.failed.items()])


class ContractError(AssertionError):
    """A strategy breaks the contract (an AssertionError, so pytest shows it as a test failure)."""


def check_strategy(strategy: type[Strategy] | str, *, overrides: Mapping[str, Any] | None = None,
                   features: FeatureSpec = FEATURES, task: TaskSpec = TASK, seed: int = 0,
                   raise_on_failure: bool = True) -> ContractReport:
    """Run the contract on ``strategy`` (a class, a registered name, or ``package.module:Class``).

    Raises ``ContractError`` listing every failed check (``raise_on_failure=False``: return the
    report instead); ``UserError`` when the name is unknown or the class cannot be loaded."""
    if isinstance(strategy, str):
        strategy_obj = registry.strategies.load(strategy)  # contract_problem is checked below, as a check
        name = strategy
    else:
        strategy_obj, name = strategy, getattr(strategy, "name", "") or getattr(strategy, "__name__", "?")
    report = ContractReport(strategy=name)
    problem = contract_problem(strategy_obj) if isinstance(strategy_obj, type) else f"{strategy_obj!r} is not a class"
    if problem:
        report.failed["class"] = problem
        return _finish(report, raise_on_failure)
    report.passed.append("class")
    cls: type[Strategy] = strategy_obj
    kit = _Kit(cls, dict(overrides or {}), features, task, seed)
    for check_name, check in (("config", kit.config), ("train", kit.train), ("predict", kit.predict),
                              ("capabilities", kit.capabilities), ("determinism", kit.determinism),
                              ("state_dict", kit.state_dict)):
        try:
            check()
        except Exception as e:  # every check runs; each failure is reported with its rule
            report.failed[check_name] = f"{type(e).__name__}: {e}" if not isinstance(e, ContractError) else str(e)
            if check_name == "config":  # nothing else can be built
                break
        else:
            report.passed.append(check_name)
    return _finish(report, raise_on_failure)


def _finish(report: ContractReport, raise_on_failure: bool) -> ContractReport:
    if raise_on_failure and not report.ok:
        raise ContractError(f"strategy {report.strategy} breaks the contract (docs/plugins.md):\n  "
                            + "\n  ".join(f"{c}: {why}" for c, why in report.failed.items()))
    return report


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ContractError(message)


class _Kit:
    def __init__(self, cls: type[Strategy], overrides: dict[str, Any], features: FeatureSpec, task: TaskSpec,
                 seed: int):
        self.cls, self.overrides, self.features, self.task, self.seed = cls, overrides, features, task, seed
        self.cfg: Any = None

    # --- building -----------------------------------------------------------------------------
    def config(self) -> None:
        fields = {f.name for f in dataclasses.fields(self.cls.Config)}
        try:
            cfg = self.cls.Config()
        except TypeError as e:
            raise ContractError(f"Config() needs arguments ({e}): every field needs a default") from None
        types = cfgmod.field_types(self.cls.Config)
        for name, typ in types.items():  # every field settable with --set: its type is one config.py parses
            try:
                cfgmod.coerce(str(getattr(cfg, name)), typ, name)
            except UserError as e:
                raise ContractError(f"field '{name}' ({typ}) cannot be set from the command line: {e}") from None
        unknown = set(self.overrides) - fields
        _require(not unknown, f"overrides name unknown field(s) {sorted(unknown)}")
        tiny = {k: v for k, v in TINY.items() if k in fields and k not in self.overrides}
        try:  # ranges: declared (config.in_range) or inferred from the field name, checked on the defaults too
            cfgmod.check_ranges(cfg, where=f"{self.cls.name} defaults")
            self.cfg = cfgmod.apply_overrides(cfg, {**tiny, **self.overrides}, where=self.cls.name)
        except UserError as e:
            raise ContractError(str(e)) from None
        self.cls.check_compatible(self.cfg, self.features, self.task)

    def build(self, seed: int | None = None) -> Strategy:
        torch.manual_seed(self.seed if seed is None else seed)
        return self.cls(self.cfg, self.features, self.task)

    def batch(self, seed: int = 1, audio: bool = True, video: bool = True) -> Batch:
        g = torch.Generator().manual_seed(seed)
        f, n = self.features, CLIPS
        y = F.one_hot(torch.arange(n) % self.task.num_classes, self.task.num_classes).float()
        a = torch.randn(n, f.num_steps, f.audio_dim, generator=g)
        v = torch.randn(n, f.num_steps, f.video_dim, generator=g)
        onsets = torch.rand(n, f.num_steps, generator=g) < 0.3
        onsets[0] = False  # a clip without any onset: the strategy's fallback
        return Batch(audio=a if audio else None, video=v if video else None, targets=y, labels=y.to(torch.uint8),
                     present=torch.ones(n, 2, dtype=torch.bool), onsets=onsets, index=torch.arange(n))

    def predict_kwargs(self, m: Strategy, b: Batch) -> dict[str, Tensor]:
        return {"onsets": b.onsets} if m.capabilities.onsets else {}

    def run_stages(self, m: Strategy, b: Batch, steps_per_stage: int = 1,
                   on_step: Callable[[str, dict[str, Tensor]], None] | None = None) -> list[float]:
        """Train ``m`` as the engine does: every stage in order, ``step`` counting across stages."""
        losses, step = [], 0
        m.train()
        for stage in m.stages:
            m.begin_stage(stage)
            params = list(m.trainable_parameters())
            opt = torch.optim.Adam(params, lr=1e-3) if params else None
            for _ in range(steps_per_stage):
                out = m.training_step(b, step)
                if on_step is not None:
                    on_step(stage, out)
                if opt is not None:
                    opt.zero_grad()
                    out["loss"].backward()
                    opt.step()
                m.after_optimizer_step(step)
                losses.append(float(out["loss"].detach()))
                step += 1
        return losses

    def logits(self, m: Strategy, b: Batch, audio: bool = True, video: bool = True) -> Tensor:
        """``predict`` as the harness calls it: eval mode, no_grad, autocast (bf16 on CPU)."""
        m.eval()
        with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            out = m.predict(b.audio if audio else None, b.video if video else None, **self.predict_kwargs(m, b))
        return out

    # --- checks -------------------------------------------------------------------------------
    def train(self) -> None:
        m = self.build()
        b = self.batch()

        def check(stage: str, out: dict[str, Tensor]) -> None:
            _require(isinstance(out, dict) and "loss" in out, f"training_step in stage '{stage}' must return "
                                                              f"{{'loss': scalar, ...}}, got {type(out).__name__}")
            loss = out["loss"]
            _require(isinstance(loss, Tensor) and loss.dim() == 0, f"stage '{stage}': loss must be a scalar tensor")
            _require(bool(torch.isfinite(loss.detach())), f"stage '{stage}': loss is not finite ({float(loss.detach())})")
            _require(loss.requires_grad, f"stage '{stage}': loss has no gradient (nothing to train)")
            for k, v in out.items():
                if isinstance(v, Tensor) and k != "loss":
                    _require(v.dim() == 0, f"stage '{stage}': extra output '{k}' must be a scalar (it is logged)")
            grads = torch.autograd.grad(loss, list(m.trainable_parameters()), retain_graph=True, allow_unused=True)
            _require(any(g is not None and bool(g.abs().sum() > 0) for g in grads),
                     f"stage '{stage}': backward reaches no trainable parameter")

        self.run_stages(m, b, on_step=check)

    def predict(self) -> None:
        m = self.build()
        b = self.batch()
        self.run_stages(m, b)
        out = self.logits(m, b, *self.first_column(m))
        _require(isinstance(out, Tensor) and tuple(out.shape) == (CLIPS, self.task.num_classes),
                 f"predict must return logits [B, C] = [{CLIPS}, {self.task.num_classes}], got "
                 f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}")
        _require(not out.requires_grad, "predict's logits require grad under torch.no_grad()")
        _require(bool(torch.isfinite(out.float()).all()), "predict returned non-finite logits")
        _require(not m.training, "predict switched the module back to train mode")

    def first_column(self, m: Strategy) -> tuple[bool, bool]:
        caps = m.capabilities
        for col in COLUMNS:
            if getattr(caps, CAPABILITY_OF[col]):
                return col in ("audio", "fusion"), col in ("video", "fusion")
        raise ContractError("the strategy declares no evaluation column (audio_only, video_only or fusion)")

    def capabilities(self) -> None:
        m = self.build()
        b = self.batch()
        self.run_stages(m, b)
        caps = m.capabilities
        for col in COLUMNS:
            cap = CAPABILITY_OF[col]
            a, v = col in ("audio", "fusion"), col in ("video", "fusion")
            if getattr(caps, cap):
                out = self.logits(m, b, a, v)
                _require(tuple(out.shape) == (CLIPS, self.task.num_classes),
                         f"declares {cap} but predict gives shape {tuple(out.shape)} for the {col} column")
            else:
                _require(bool(caps.reasons.get(cap)), f"does not declare {cap} but gives no reason in "
                                                     f"Capabilities.reasons['{cap}'] (shown to users)")
                try:
                    self.logits(m, b, a, v)
                except Exception:
                    pass
                else:
                    raise ContractError(f"does not declare {cap} yet predict answers the {col} column: refuse it "
                                        f"(raise) or declare it")
        if caps.embeddings:
            m.eval()
            with torch.no_grad():
                emb = m.embed(b.audio, None)
            _require(isinstance(emb, dict) and emb and all(t.dim() == 3 and t.shape[0] == CLIPS for t in emb.values()),
                     "declares embeddings but embed does not return {layer: [B, T, D]}")
        if caps.attention:
            m.eval()
            with torch.no_grad():
                att = m.attention_maps(b.audio, None)  # one modality: what the attention analysis asks
            _require(isinstance(att, dict) and att and all(t.dim() == 4 for t in att.values()),
                     "declares attention but attention_maps does not return {layer: [B, heads, Tq, Tk]}")
        if caps.heads:
            m.eval()
            with torch.no_grad():
                heads = m.head_logits(b.audio, b.video, **self.predict_kwargs(m, b))
            _require(isinstance(heads, dict) and heads and all(
                tuple(t.shape) == (CLIPS, self.task.num_classes) for t in heads.values()),
                "declares heads but head_logits does not return {head: [B, C]}")
        if caps.cross_modal:
            for modality in ("audio", "video"):
                x = self.build()
                x.train_modality = modality
                hidden = self.batch(audio=modality == "audio", video=modality == "video")
                self.run_stages(x, self.batch(), steps_per_stage=0)  # stages entered as the engine does
                x.train()
                out = x.training_step(hidden, 0)
                _require(bool(torch.isfinite(out["loss"])), f"declares cross_modal but training on {modality} "
                                                           f"alone gives a non-finite loss")

    def determinism(self) -> None:
        b = self.batch()
        one, two = self.build(), self.build()
        sa, sb = one.state_dict(), two.state_dict()
        for k, t in sa.items():
            if isinstance(t, Tensor):
                _require(torch.equal(t, sb[k]), f"two builds with seed {self.seed} differ in '{k}': initialise "
                                                f"from torch's global generator (the harness seeds it)")
        torch.manual_seed(self.seed + 1)
        la = self.run_stages(one, b)
        torch.manual_seed(self.seed + 1)
        lb = self.run_stages(two, b)
        _require(la == lb, f"the same seed and batch give different losses: {la} vs {lb}")
        cols = self.first_column(one)
        _require(torch.equal(self.logits(one, b, *cols), self.logits(two, b, *cols)),
                 "the same seed and batch give different logits after training")

    def state_dict(self) -> None:
        b = self.batch()
        trained = self.build()
        self.run_stages(trained, b)
        buf = io.BytesIO()
        torch.save({"state_dict": trained.state_dict()}, buf)  # as avbench's model.pt and checkpoints hold it
        buf.seek(0)
        try:
            state = torch.load(buf, weights_only=True)["state_dict"]
        except Exception as e:
            raise ContractError(f"state_dict does not load with torch.load(weights_only=True) (avbench refuses "
                                f"pickled objects): {type(e).__name__}: {e}") from None
        other = self.build(seed=self.seed + 12345)
        for stage in other.stages:  # a multi-stage model may add modules in a later stage
            other.begin_stage(stage)
        other.load_state_dict(state)
        cols = self.first_column(trained)
        _require(torch.equal(self.logits(trained, b, *cols), self.logits(other, b, *cols)),
                 "a build loaded from the trained state_dict predicts differently (state kept outside state_dict?)")


def strategy_names() -> list[str]:
    """Every registered strategy (for parametrised tests)."""
    return registry.strategies.names()
