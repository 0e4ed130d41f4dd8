"""Small builders shared by tests (tiny synth caches, CLI invocation)."""

from __future__ import annotations

from pathlib import Path

from avbench.datasets.synth import SynthKnobs, build_synth_cache

TINY = dict(classes=4, train_clips=96, test_clips=48, steps=8, audio_dim=16, video_dim=12, seed=0)
TINY_SETS = [f"data.{k}={v}" for k, v in TINY.items() if k != "seed"] + ["train.batch_size=16"]


def tiny_cache(path: Path, **over) -> Path:
    return build_synth_cache(path, SynthKnobs(**{**TINY, **over}))


def run_args(strategy: str, results: Path, *extra: str, seeds: str = "0", epochs: int = 1,
             model_sets: tuple[str, ...] = ("embed_dim=16",)) -> list[str]:
    args = ["run", "--strategy", strategy, "--dataset", "synth", "--seeds", seeds, "--epochs", str(epochs),
            "--results-dir", str(results), "--no-progress", "--no-save-model"]
    for s in TINY_SETS + list(model_sets):
        args += ["--set", s]
    return args + list(extra)


def default_sigint() -> None:
    """``preexec_fn`` for a child started as a terminal starts it: SIGINT not ignored, even when the
    suite itself runs in the background (a shell's ``&`` makes SIGINT ignored and exec keeps that, so
    a Ctrl-C test would wait for a child that never hears it)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def runs_by_status(results: Path) -> dict[str, int]:
    """``{status: count}`` of the active MLflow runs in a results dir's sqlite store ({} without one)."""
    import sqlite3

    db = results / "mlflow.db"
    if not db.exists():
        return {}
    with sqlite3.connect(db) as c:
        return dict(c.execute("select status, count(*) from runs where lifecycle_stage = 'active' group by status"))


def assert_clean_error(capsys, rc: int, message: str, results: Path | None = None) -> str:
    """The fault suite's rule for bad input: exit 2, one error line naming the problem, no traceback,
    and (given ``results``) no run left RUNNING and no half-written file. Returns the error line."""
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    # Progress lines of a run that trained before failing may precede it; the error is one line.
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, err
    if results is not None:
        assert runs_by_status(results).get("RUNNING", 0) == 0
        assert not list(results.rglob("*.tmp")), "a half-written file was left behind"
    return lines[0]


class InProcessExecutor:
    """The executor interface run synchronously in this process: a spy sees what a job opens (the real
    executors run the same jobs in workers the spy cannot reach), and no worker starts."""

    slots, threads_per_job, multi_node = 1, 1, False

    def __init__(self):
        self.done = []

    def describe(self):
        return "in-process test executor"

    def submit(self, job):
        from avbench.executor import Outcome

        self.done.append(Outcome(job.key, True, value=job.fn(*job.args)))  # a raising trial fails the test

    def wait(self, timeout=None):
        out, self.done = self.done, []
        return out

    def running(self):
        return 0

    def outstanding(self):
        return len(self.done)

    def cancel(self):
        pass

    def close(self):
        pass
