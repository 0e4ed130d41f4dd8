"""What a warm worker puts back after each job, so job N+1 starts as it would in a fresh process.

Why: a local worker imports torch, MLflow and avbench once and then runs job after job (the way Ray
actors do), so a tuning trial or sweep job costs its training, not a fresh interpreter. Everything a
job may change in process-wide state would otherwise leak into the next job and could change its
numbers or its output. ``WorkerState`` records that state when the worker starts and ``restore``
puts it back after every job:

- the environment (``os.environ``), working directory, ``sys.argv`` and ``sys.path``;
- SIGINT / SIGTERM handlers (the worker's own: Ctrl-C ignored, SIGTERM -> KeyboardInterrupt);
- logging: handlers a job added to a logger that existed when the worker started (the root logger,
  ``avbench``'s, those of the modules it preloads) are closed and removed, levels and ``propagate``
  restored; avbench's own module globals (the recorded command line, the progress switch);
- warnings filters;
- random generators: torch's (CPU and every CUDA device), Python's ``random`` and numpy's global one
  re-seeded from OS entropy, as a fresh process seeds them (a job that wants reproducible numbers
  seeds them itself, as ``avbench.train.engine.set_seed`` does);
- torch's global switches: default dtype, grad mode, deterministic algorithms, float32 matmul
  precision, cuDNN / TF32 flags; compiled graphs (``torch._dynamo.reset``) and cached CUDA memory;
- MLflow's fluent active-run stack (a run left open is ended KILLED in the store).

Thread counts are not restored here: ``execute`` sets them for every job before it runs.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import signal
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

# Module globals of avbench that a job (the CLI's ``main``) sets: (module, attribute).
_GLOBALS = (("avbench.results", "_command"), ("avbench.log", "_progress"))
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class WorkerState:
    environ: dict[str, str]
    cwd: str
    argv: list[str]
    path: list[str]
    signals: dict[int, Any]
    loggers: dict[str, tuple[list[logging.Handler], int, bool, bool]]
    warning_filters: list[Any]
    globals: dict[tuple[str, str], Any] = field(default_factory=dict)
    torch: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def capture(cls) -> WorkerState:
        logging.getLogger("avbench")  # exists from now on, so what a job adds to it is taken back
        st = cls(environ=dict(os.environ), cwd=os.getcwd(), argv=list(sys.argv), path=list(sys.path),
                 signals={s: signal.getsignal(s) for s in _SIGNALS}, loggers=_loggers(),
                 warning_filters=list(warnings.filters))
        for mod, attr in _GLOBALS:
            if mod in sys.modules and hasattr(sys.modules[mod], attr):
                st.globals[(mod, attr)] = getattr(sys.modules[mod], attr)
        if "torch" in sys.modules:
            st.torch = _torch_state()
        return st

    def restore(self) -> None:
        """Put the process back as it was at ``capture``; never raises (a failed reset must not kill the worker)."""
        for step in (self._mlflow, self._environ, self._logging, self._globals, self._torch, self._misc):
            try:
                step()
            except Exception:  # noqa: BLE001,S110 -- best effort: the next job still runs
                pass
        gc.collect()

    def _mlflow(self) -> None:
        mlflow = sys.modules.get("mlflow")
        if mlflow is None:
            return
        for _ in range(16):  # nested runs: end them all
            if mlflow.active_run() is None:
                break
            mlflow.end_run(status="KILLED")

    def _environ(self) -> None:
        if os.environ != self.environ:
            os.environ.clear()
            os.environ.update(self.environ)
        if os.getcwd() != self.cwd:
            os.chdir(self.cwd)
        sys.argv[:] = self.argv
        sys.path[:] = self.path
        for s, h in self.signals.items():
            if signal.getsignal(s) is not h and h is not None:
                signal.signal(s, h)

    def _logging(self) -> None:
        # Only loggers that existed at capture: one a library created on import during a job keeps its
        # import-time set-up, as it would keep it in a fresh process after the same import.
        before = self.loggers
        for name, lg in _all_loggers():
            if name not in before:
                continue
            handlers, level, propagate, disabled = before[name]
            for h in list(lg.handlers):
                if h not in handlers:
                    lg.removeHandler(h)
                    h.close()
            for h in handlers:
                if h not in lg.handlers:
                    lg.addHandler(h)
            lg.setLevel(level)
            lg.propagate, lg.disabled = propagate, disabled
        logging.disable(logging.NOTSET)

    def _globals(self) -> None:
        for (mod, attr), value in self.globals.items():
            if mod in sys.modules:
                setattr(sys.modules[mod], attr, value)
        for mod, attr in _GLOBALS:  # set by the job for the first time: back to the module's default
            if (mod, attr) not in self.globals and mod in sys.modules and attr == "_command":
                setattr(sys.modules[mod], attr, None)

    def _torch(self) -> None:
        torch = sys.modules.get("torch")
        if torch is None:
            return
        if not self.torch:  # torch was not imported when the worker started: no fresh state to go back to
            return
        t = self.torch
        torch.seed()  # CPU and every CUDA device from OS entropy, as at interpreter start (torch >= 2.x)
        torch.set_default_dtype(t["dtype"])
        torch.set_grad_enabled(t["grad"])
        torch.use_deterministic_algorithms(t["deterministic"], warn_only=t["deterministic_warn_only"])
        torch.set_float32_matmul_precision(t["matmul_precision"])
        torch.backends.cudnn.benchmark = t["cudnn_benchmark"]
        torch.backends.cudnn.deterministic = t["cudnn_deterministic"]
        torch.backends.cudnn.allow_tf32 = t["cudnn_tf32"]
        torch.backends.cuda.matmul.allow_tf32 = t["cuda_tf32"]
        dynamo = sys.modules.get("torch._dynamo")
        if dynamo is not None:
            dynamo.reset()
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()

    def _misc(self) -> None:
        warnings.filters[:] = self.warning_filters
        random.seed()
        np = sys.modules.get("numpy")
        if np is not None:
            np.random.seed()


def _torch_state() -> dict[str, Any]:
    import torch

    return {"dtype": torch.get_default_dtype(), "grad": torch.is_grad_enabled(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_tf32": torch.backends.cudnn.allow_tf32, "cuda_tf32": torch.backends.cuda.matmul.allow_tf32}


def _all_loggers() -> list[tuple[str, logging.Logger]]:
    out = [("", logging.getLogger())]
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if isinstance(lg, logging.Logger):
            out.append((name, lg))
    return out


def _loggers() -> dict[str, tuple[list[logging.Handler], int, bool, bool]]:
    return {name: (list(lg.handlers), lg.level, lg.propagate, lg.disabled) for name, lg in _all_loggers()}
