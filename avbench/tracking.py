"""MLflow is the shared view: an experiment per dataset, a parent run per (strategy, config, cache,
recipe, protocol) carrying ``<metric>_mean``/``_std``/``_n`` of the evaluation metrics, and a child run
per seed with params, per-epoch metrics, throughput and a ``result.json`` artifact.

The record of truth is local (``avbench.record``): MLflow may be a server that goes away, so this
module gives every call a bounded, stated timeout (``HTTP_TIMEOUT_S``/``HTTP_RETRIES``), probes a
server in seconds before a run starts, and ``Resilient`` turns the first failure into "offline" (the
run finishes; ``avbench sync`` sends it later) instead of a 10-minute retry and a traceback.

Conventions an MLflow user expects: the standard ``mlflow.source.*``/``mlflow.user``/
``mlflow.note.content`` tags, the cache logged as a dataset input, a parent RUNNING while its seeds
run, experiments in the classic ML layout (``mlflow.experimentKind``) and no empty "Default"
experiment. A (group, seed) has one FINISHED child: readers (``children``) never count a seed twice.

The client API (``MlflowClient``) is used throughout, with the parent tag set explicitly, so runs
made by several processes (sweeps, distributed rank 0) nest correctly; creating the sqlite store is
serialised by a file lock so several processes may start in one fresh results folder.

Over 400 lines because it is the one place that talks to MLflow (store, client, retries, tags, metric
names): a second module would split the retry and offline rules between two files.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import math
import os
import shlex
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from avbench import profile as prof
from avbench import provenance, results
from avbench.errors import UserError
from avbench.metrics.stats import mean_std_ci
from avbench.results import metric_name  # the one spelling of a metric key in MLflow ('@' is not allowed)

TAG_KIND = "avbench.kind"
TAG_GROUP = "avbench.group"
TAG_STRATEGY = "avbench.strategy"
TAG_DATASET = "avbench.dataset"
TAG_SEED = "avbench.seed"
TAG_PROCESS = "avbench.process"  # "<host>:<pid>:<process start time>" of the process that owns a RUNNING run
TAG_RECORD = "avbench.record"  # the local record a child run mirrors (avbench.record)
TAG_PARENT = "mlflow.parentRunId"
TAG_PROTOCOL = "avbench.protocol"  # "standard" or "cross-modal"
TAG_CREATED_BY = "avbench.created_by"  # "sweep:<name>" on a sweep's parents
TAG_SWEEP_PREFIX = "avbench.sweep."  # + sweep name: that sweep's point (JSON) on a parent
TAG_SWEEP_NAME = "avbench.sweep_name"  # on a sweep's record run (kind "sweep"): the sweep's name
TAG_MEMBER_PREFIX = "avbench.sweep_member."  # on a sweep's record run: + a parent's run id -> its point
TAG_TUNED = "avbench.tuned"  # the tuned.json a run started from (run --tuned)
TAG_TEST_EVERY_EPOCH = "avbench.test_every_epoch"  # "true": the test split was read after every epoch
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # the classic ML layout in the UI

# Every HTTP call to a tracking server: at most HTTP_RETRIES retries of HTTP_TIMEOUT_S each (with a
# 1 s exponential backoff); a server that stays away costs a run well under a minute, once.
HTTP_TIMEOUT_S = 10
HTTP_RETRIES = 2
PROBE_TIMEOUT_S = 3.0
# What a parent run aggregates over its seeds: what the model scored (columns, retrieval, per-head
# union F1, the analyses) and whether training converged; never lr, stage or losses.
EVAL_PREFIXES = ("audio/", "video/", "fusion/", "retrieval/", "test/", "heads/", "analysis/")
EVAL_KEYS = ("converged", "diverged")


class TrackingUnavailable(UserError):
    """The tracking server cannot be reached (a one-line message; the local record is unaffected)."""


def tracking_uri(results_dir: str | Path) -> str:
    """$MLFLOW_TRACKING_URI if set (a team server), else sqlite under the results directory."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    path = Path(results_dir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


def experiment_name(dataset: str) -> str:
    return f"avbench-{dataset}"


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def probe(uri: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why a tracking server cannot be reached (None when it answers, or when the URI is not HTTP)."""
    if not is_remote(uri):
        return None
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as e:
        reason = type(e).__name__
        if isinstance(e, requests.ConnectionError):
            reason = "connection refused or host unreachable"
        elif isinstance(e, requests.Timeout):
            reason = f"no answer within {timeout:g} s"
        return reason
    return None


@contextlib.contextmanager
def store_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory/.mlflow.lock`` (creating or migrating the sqlite store)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".mlflow.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _store_state(db: Path) -> tuple[str, int]:
    """("ok" | "new" | "outdated" | "partial" | "corrupt", number of runs it holds) of a sqlite store."""
    import sqlite3

    if not db.exists() or db.stat().st_size == 0:
        return "new", 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
            tables = {r[0] for r in c.execute("select name from sqlite_master where type = 'table'")}
            runs = c.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0
            version = (c.execute("select version_num from alembic_version").fetchone() or [None])[0] \
                if "alembic_version" in tables else None
    except sqlite3.DatabaseError:
        return "corrupt", 0
    if not tables:
        return "new", 0
    if any(t.startswith("_alembic_tmp_") for t in tables) or not {"experiments", "runs"} <= tables or version is None:
        return "partial", runs
    from mlflow.store.db.utils import _get_latest_schema_revision

    return ("ok" if version == _get_latest_schema_revision() else "outdated"), runs


def store_template() -> Path | None:
    """Where an empty, current store made by this MLflow is kept for the next new results dir:
    ``<cache root>/mlflow-store/<mlflow version>-<alembic head revision>.db``. Creating a store runs
    every alembic migration (seconds, issue 27); copying a finished empty one is a file copy. The name
    ties it to the MLflow version and schema head, and ``prepare_sqlite_store`` uses it only when its
    ``alembic_version`` row is that head and it holds no run (``_store_state``), as for any store."""
    try:
        import mlflow
        from mlflow.store.db.utils import _get_latest_schema_revision

        from avbench.paths import cache_root

        return cache_root() / "mlflow-store" / f"{mlflow.__version__}-{_get_latest_schema_revision()}.db"
    except Exception:  # noqa: BLE001 - no template: the store is created the usual way
        return None


def _keep_template(db: Path, template: Path | None) -> None:
    """Copy the just-created empty store to ``template`` (atomically; any failure: no template)."""
    import sqlite3

    if template is None:
        return
    tmp = template.with_name(f".{template.name}.{os.getpid()}.tmp")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(db)) as src, contextlib.closing(sqlite3.connect(tmp)) as dst:
            src.backup(dst)
        os.replace(tmp, template)
    except (OSError, sqlite3.Error):
        pass
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _create_store(db: Path) -> None:
    """A new store: a copy of the template when there is a valid one, else created (and kept as one)."""
    template = store_template()
    if template is not None and template.exists() and _store_state(template) == ("ok", 0):
        _build_on_copy(db, template, migrate=False)
        if _store_state(db) == ("ok", 0):
            return
        os.replace(db, db.with_name(f"{db.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}"))  # never expected
    _build_on_copy(db, None)
    _keep_template(db, template)


def _build_on_copy(db: Path, source: Path | None, migrate: bool = True) -> None:
    """Create (``source`` None) or migrate a copy of ``source`` beside ``db`` (``migrate=False``: copy
    only), then rename it into place: a full disk or a kill in the middle leaves the old store (or
    none) and no temporary file."""
    import sqlite3

    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables, _upgrade_db

    tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    try:
        if source is not None:
            with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(tmp)) as dst:
                src.backup(dst)
        if source is None or migrate:
            engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
            try:
                if source is None:
                    _initialize_tables(engine)
                else:
                    _upgrade_db(engine)
            finally:
                engine.dispose()
        os.replace(tmp, db)
    except Exception as e:  # noqa: BLE001 - any failure: the original stays as it was
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        verb = "create" if source is None else "migrate"
        raise UserError(f"tracking store {db}: cannot {verb} it ({first}); nothing was changed") from None
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            if leftover.exists():
                leftover.unlink()


def prepare_sqlite_store(db: Path) -> str | None:
    """Make ``db`` a current, complete MLflow store before any client opens it (call under
    ``store_lock``). A new store is created on a copy renamed into place; an outdated one is migrated
    on a copy; one left half-made by an older avbench (an interrupted creation, ``_alembic_tmp_*``) is
    moved aside and recreated when it holds no run, and refused in one line when it does. Returns a
    note when it repaired something."""
    state, runs = _store_state(db)
    if state == "ok":
        return None
    if state == "new":
        _create_store(db)  # a copy of the kept empty store when this MLflow made one before
        return None
    if state == "outdated":
        _build_on_copy(db, db)
        return f"tracking store {db}: migrated to the installed MLflow's schema"
    if runs == 0:  # half-made (or not a database) and holding nothing: set it aside, start again
        aside = db.with_name(f"{db.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(db, aside)
        _create_store(db)
        return f"tracking store {db}: was half-created ({state}); set aside as {aside.name} and recreated"
    raise UserError(f"tracking store {db}: {'half-migrated' if state == 'partial' else 'not an sqlite database'} and "
                    f"holding {runs} run(s); restore it from a backup (or move it aside; the results under "
                    f"{db.parent / 'runs'} can be sent again with avbench sync)")


# --- who owns a RUNNING run ------------------------------------------------------------------------
def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid()) or ''}"


def process_alive(tag: str) -> bool | None:
    """Whether the process named by ``process_tag()`` still runs (None: another host, cannot tell)."""
    host, _, rest = tag.partition(":")
    pid_s, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_s.isdigit():
        return None
    pid = int(pid_s)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not start or _start_time(pid) == start  # a reused pid is another process


# --- standard MLflow tags --------------------------------------------------------------------------
def command_line() -> str:
    """The command line as the CLI received it (``avbench.results`` records it), else ``sys.argv``.
    Not cached: one process may run several commands (tests, in-process jobs), each a run's own."""
    argv = results.command()
    prog = Path(argv[0]).name if argv else "avbench"
    if prog in ("__main__.py", "-m", "-c") or prog.startswith("python"):
        prog = "avbench"
    return shlex.join([prog, *argv[1:]])


def source_tags() -> dict[str, str]:
    """``mlflow.source.*``, ``mlflow.user``, the command line as the run's description, and the
    provenance tags (commit, dirty flag, host, CPU model and flags, GPUs)."""
    tags = {"mlflow.source.name": " ".join(command_line().split()[:2]), "mlflow.source.type": "LOCAL",
            "mlflow.note.content": command_line()}
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (KeyError, OSError):
        pass
    tags.update(provenance.mlflow_tags())  # the commit however avbench was installed; host, CPU, GPUs
    return tags


def is_eval_metric(key: str) -> bool:
    return (key.startswith(EVAL_PREFIXES) or key in EVAL_KEYS) and "clips_per_s" not in key


class Tracker:
    def __init__(self, results_dir: str | Path):
        import logging

        from mlflow.tracking import MlflowClient

        for name, level in (("mlflow", logging.WARNING), ("alembic", logging.WARNING), ("urllib3", logging.ERROR)):
            logging.getLogger(name).setLevel(level)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(HTTP_TIMEOUT_S))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(HTTP_RETRIES))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        self.results_dir = Path(results_dir).expanduser().resolve()
        self.uri = tracking_uri(self.results_dir)
        down = probe(self.uri)
        if down:
            raise TrackingUnavailable(f"tracking server {self.uri} is not reachable ({down})")
        with self._lock():  # sqlite: the first process creates and migrates the store; the others wait
            if self.uri.startswith("sqlite:///"):
                note = prepare_sqlite_store(Path(self.uri[len("sqlite:///"):]))
                if note:
                    logging.getLogger(__name__).warning(note)
            self.client = MlflowClient(tracking_uri=self.uri)
            if self.uri.startswith("sqlite:"):
                self.client.search_experiments(max_results=1)
                self._drop_empty_default()

    def _drop_empty_default(self) -> None:
        """MLflow's sqlite store makes an empty "Default" experiment; avbench never uses it."""
        exp = self.client.get_experiment("0")
        if exp is not None and exp.lifecycle_stage == "active" and not self.client.search_runs(["0"], max_results=1):
            with contextlib.suppress(Exception):
                self.client.delete_experiment("0")

    # --- experiments and runs ---------------------------------------------------------------------
    def experiment_id(self, dataset: str, create: bool = True) -> str | None:
        name = experiment_name(dataset)
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.tags.get(EXPERIMENT_KIND[0]) is None and create:
                self.client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
            return exp.experiment_id
        if not create:
            return None
        location = None
        if self.uri.startswith("sqlite:"):
            location = (self.results_dir / "artifacts").as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location, tags=dict([EXPERIMENT_KIND]))
        except Exception:  # another process created it first
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def find_parent(self, dataset: str, group: str, kind: str = "parent") -> str | None:
        """The first parent run of ``group`` (``kind``: "parent" for results, "tune" for a tuning)."""
        exp = self.experiment_id(dataset, create=False)
        if exp is None:
            return None
        found = self.client.search_runs([exp], filter_string=f"tags.`{TAG_GROUP}` = '{group}' and "
                                                            f"tags.`{TAG_KIND}` = '{kind}'", max_results=1,
                                        order_by=["attributes.start_time ASC"])
        return found[0].info.run_id if found else None

    def parent_run(self, dataset: str, group: str, name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        """Find the parent run of ``group`` (so new seeds join it) or create it (left RUNNING). A kind
        given in ``tags`` (a tuning parent is "tune") is looked up as that kind."""
        with self._lock():  # two processes of one group make one parent
            found = self.find_parent(dataset, group, tags.get(TAG_KIND, "parent"))
            if found:
                return found
            exp = self.experiment_id(dataset)
            run = self.client.create_run(exp, run_name=name, tags={TAG_KIND: "parent", TAG_GROUP: group,
                                                                   TAG_DATASET: dataset, TAG_PROCESS: process_tag(),
                                                                   **source_tags(), **tags})
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def _lock(self) -> Any:
        """The store's own folder is locked (sqlite), so every process using that database agrees."""
        if not self.uri.startswith("sqlite:"):
            return contextlib.nullcontext()
        return store_lock(Path(self.uri[len("sqlite:///"):]).parent if self.uri.startswith("sqlite:///")
                          else self.results_dir)

    def begin(self, run_id: str) -> None:
        """Mark a run RUNNING and owned by this process (a parent while its seeds run, a resumed child)."""
        self.client.set_tag(run_id, TAG_PROCESS, process_tag())
        self.client.update_run(run_id, status="RUNNING")

    def children(self, parent_id: str, finished_only: bool = True) -> list[Any]:
        """Child runs of a parent; with ``finished_only`` one per seed (the latest), so no seed counts twice."""
        parent = self.client.get_run(parent_id)
        filt = f"tags.`{TAG_PARENT}` = '{parent_id}'"
        if finished_only:
            filt += " and attributes.status = 'FINISHED'"
        runs = self.client.search_runs([parent.info.experiment_id], filter_string=filt, max_results=10000,
                                       order_by=["attributes.start_time DESC"])
        if not finished_only:
            return runs
        latest: dict[str, Any] = {}
        for run in runs:
            latest.setdefault(run.data.tags.get(TAG_SEED, run.info.run_id), run)
        return list(latest.values())

    def seed_runs(self, parent_id: str, seed: int) -> list[Any]:
        """Every child of ``seed`` under the parent, newest first."""
        return [r for r in self.children(parent_id, finished_only=False) if r.data.tags.get(TAG_SEED) == str(seed)]

    def finished_seed(self, parent_id: str, seed: int) -> str | None:
        for run in self.children(parent_id):
            if run.data.tags.get(TAG_SEED) == str(seed):
                return run.info.run_id
        return None

    def start_child(self, parent_id: str, seed: int, name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        parent = self.client.get_run(parent_id)
        run = self.client.create_run(parent.info.experiment_id, run_name=f"{name}-seed{seed}",
                                     tags={TAG_KIND: "seed", TAG_PARENT: parent_id, TAG_SEED: str(seed),
                                           TAG_PROCESS: process_tag(), **source_tags(), **tags})
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def mark_stale_killed(self) -> int:
        """Runs left RUNNING by a process of this host that no longer exists become KILLED."""
        n = 0
        for exp in self.client.search_experiments(max_results=1000):
            for run in self.client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                               max_results=10000):
                owner = run.data.tags.get(TAG_PROCESS)
                if owner and process_alive(owner) is False:
                    self.client.set_terminated(run.info.run_id, "KILLED")
                    n += 1
        return n

    # --- logging ----------------------------------------------------------------------------------
    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_str(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            with signals_deferred():
                self.client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(metric_name(k), float(v), ts, step or 0) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and math.isfinite(float(v))]
        for i in range(0, len(items), 500):
            with signals_deferred():
                self.client.log_batch(run_id, metrics=items[i:i + 500])

    def log_dataset(self, run_id: str, name: str, digest: str, source: str, profile: dict[str, Any],
                    contexts: tuple[str, ...] = ("train", "validation", "test")) -> None:
        """The feature cache as the run's dataset inputs, one per split role it read (``mlflow.data.context``:
        train, validation, test; shown in the UI's Datasets column). A tuning trial never reads the test
        split and says so by leaving "test" out."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = []
        for ctx in contexts:
            suffix = "" if ctx == "train" else f" ({ctx})"  # the training input keeps the cache's own name
            ds = Dataset(name=name + suffix, digest=(digest or "unknown") + ("" if ctx == "train" else f":{ctx}"),
                         source_type="local", source=json.dumps({"uri": source, "context": ctx}),
                         profile=json.dumps(profile, default=str))
            inputs.append(DatasetInput(ds, tags=[InputTag("mlflow.data.context", ctx)]))
        with signals_deferred():
            self.client.log_inputs(run_id, datasets=inputs)

    def log_curve(self, run_id: str, key: str, points: Iterable[tuple[int, float]]) -> None:
        """A curve as one stepped metric (step = training step), in one batch: the validation curve."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(metric_name(key), float(v), ts, int(s)) for s, v in points if math.isfinite(float(v))]
        for i in range(0, len(items), 500):
            with signals_deferred():
                self.client.log_batch(run_id, metrics=items[i:i + 500])

    def log_json(self, run_id: str, name: str, data: Any) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / name
            p.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default))
            self.client.log_artifact(run_id, str(p))

    def log_file(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        with signals_deferred():
            self.client.set_terminated(run_id, status)

    def update_parent_summary(self, parent_id: str, keys: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
        """Recompute ``<metric>_mean``, ``_std``, ``_n`` of the evaluation metrics over finished seeds."""
        wanted = {metric_name(k) for k in keys} if keys is not None else None
        values: dict[str, list[float]] = {}
        for run in self.children(parent_id):
            for k, v in run.data.metrics.items():
                if (k in wanted) if wanted is not None else is_eval_metric(k):
                    values.setdefault(k, []).append(v)
        summary = {k: mean_std_ci(v) for k, v in values.items()}
        flat = {}
        for k, s in summary.items():
            flat[f"{k}_mean"] = s["mean"]
            flat[f"{k}_std"] = s["std"]
            flat[f"{k}_n"] = s["n"]
        self.log_metrics(parent_id, flat)
        return summary

    def start_eval(self, dataset: str, name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        """An evaluation run (``avbench eval``): kind "eval", no parent, in the dataset's experiment."""
        exp = self.experiment_id(dataset)
        run = self.client.create_run(exp, run_name=name, tags={TAG_KIND: "eval", TAG_DATASET: dataset,
                                                               TAG_PROCESS: process_tag(), **source_tags(), **tags})
        self.log_params(run.info.run_id, params)
        return run.info.run_id


class Resilient:
    """A Tracker that never stops a run: the first failed call sets ``down`` (one reason) and every
    later call is skipped, so the run trains on and its local record is sent by ``avbench sync``."""

    def __init__(self, tracker: Tracker | None, down: str | None = None):
        self.tracker = tracker
        self.down = down if tracker is not None or down else "tracking disabled"

    @classmethod
    def open(cls, results_dir: str | Path) -> Resilient:
        try:
            return cls(Tracker(results_dir))
        except TrackingUnavailable as e:
            return cls(None, str(e))
        except Exception as e:  # noqa: BLE001 - a broken store must not lose the run either
            return cls(None, f"tracking store unusable ({type(e).__name__}: {str(e).splitlines()[0][:200]})")

    @property
    def up(self) -> bool:
        return self.down is None

    @property
    def uri(self) -> str | None:
        return self.tracker.uri if self.tracker is not None else None

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(tracker, ...)`` or None once tracking is down (KeyboardInterrupt still propagates)."""
        if not self.up:
            return None
        try:
            with prof.phase("tracking"):
                return fn(self.tracker, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any tracking failure means "send it later"
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            self.down = f"tracking at {self.uri} failed ({type(e).__name__}{': ' + first if first else ''})"
            return None


def _param_str(v: Any) -> str:
    s = json.dumps(v, default=str) if isinstance(v, (list, dict, tuple)) else str(v)
    return s[:6000]


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


@contextlib.contextmanager
def signals_deferred():
    """Ctrl-C / SIGTERM wait until the write inside has finished (then they are raised as usual).

    A KeyboardInterrupt raised in the middle of an sqlite transaction leaves the store locked, so the
    run's closing writes (status KILLED) then fail with "database is locked". Blocking the two signals
    for the few milliseconds of one write keeps every interrupt between writes. Main thread only
    (the mask is per thread; other threads never receive the KeyboardInterrupt)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def flatten(prefix: str, d: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{k}": v for k, v in d.items()}


def finished_runs(runs: Iterable[Any]) -> list[Any]:
    return [r for r in runs if r.info.status == "FINISHED"]
