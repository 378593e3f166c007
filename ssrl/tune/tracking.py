"""MLflow from the driver: one experiment per sweep, a parent run per invocation, a run per trial."""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from ssrl.errors import TrackingError  # defined there so that error types import without Ray
from ssrl.tune.meta import split

EPOCH_METRICS = ("train_loss", "val_score", "lr", "probe_score", "val_classes_used")  # per-epoch history, step = epoch
# Keys Ray adds to every result: bookkeeping, not measurements.
_RAY_KEYS = ("done", "epoch", "training_iteration", "pid", "timestamp", "should_checkpoint")
_RAY_PREFIXES = ("time_", "timesteps_", "iterations_since", "warmup_time", "episodes_")
# MLflow 3's UI opens an experiment in its model-training view (runs, charts, compare) only when it is
# tagged as such; otherwise it guesses and may land on the GenAI overview (traces, token usage).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
_PARAM_LEN = 500  # the smallest limit across MLflow versions and servers

# Trackers alive in this driver process, by ssrl run id: Tune pickles its callbacks into the
# experiment (tuner.pkl), so a TrialLogger pickles as (run id, stage) and finds its tracker here
# when `Tuner.restore` unpickles it; no client, URI or password ever lands in the Tune storage.
_ACTIVE: dict[str, Tracker] = {}


def redact(uri: str) -> str:
    """A tracking URI without user:password, safe to print, tag or log."""
    parts = urlsplit(uri)
    if parts.password or parts.username:
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=f"***@{host}"))
    return uri


def scrub(text: str, uri: str) -> str:
    """`text` with the URI's user:password (which errors from the HTTP stack may quote) masked."""
    parts = urlsplit(uri)
    text = text.replace(uri, redact(uri))
    if parts.password:
        text = text.replace(f"{parts.username}:{parts.password}", "***").replace(parts.password, "***")
    return text


def git_commit() -> str:
    """The project's git commit (with '-dirty' for uncommitted changes), or 'unknown' outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        commit = head.stdout.strip()
        if not commit:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True,
                               timeout=10)
        return commit + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextmanager
def _env(**values: str) -> Iterator[None]:
    """Environment variables set for the duration of a block (then restored)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def connect(uri: str, timeout_s: float = 5.0) -> MlflowClient:
    """A client for the store, checked now: an unreachable server fails in seconds, not after training."""
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial ... tables" x2
    if uri.startswith("sqlite:///"):  # MLflow would retry an unopenable file for minutes
        db = Path(uri[len("sqlite:///"):])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
            with db.open("ab"):  # an empty file is an empty sqlite database
                pass
        except OSError as e:
            raise TrackingError(f"tracking store {uri}: cannot write {db} ({e.strerror}); "
                                "pass --out or --tracking-uri") from None
    # MLflow prints "View run ... at <uri>" (credentials included) on every run end against a server.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    # One try, short timeout for the check only; the sweep itself keeps MLflow's retries.
    with _env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(max(1, int(timeout_s)))):
        try:
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
        except Exception as e:  # noqa: BLE001 - any failure here means the store is unusable
            raise TrackingError(f"tracking store {redact(uri)} cannot be reached ({scrub(_reason(e), uri)}); "
                                "start the server or pass --tracking-uri (default: sqlite:///<out>/mlflow.db)") from None
    return client


def _reason(e: BaseException) -> str:
    """The root cause of a failed store check in a few words ('[Errno 111] Connection refused')."""
    chain, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    text = " ".join(chain)
    found = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text) or re.search(r"[Rr]ead timed out|timed out", text)
    if found:
        return found.group(0).strip()
    return (chain[0].strip().splitlines() or ["unknown error"])[0][:160]


def flatten_for_params(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as 'a.b' keys (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_for_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """A trial run's MLflow params: its training fields, and the encoder it fine-tunes (meta goes to tags)."""
    training, meta = split(config)
    return {**training, **({"pretrained_uri": meta.pretrained_uri} if meta.pretrained_uri else {})}


def trial_tags(config: dict[str, Any], stage: str) -> dict[str, str]:
    """The tags of a trial run, from its meta (n_labelled_used, what it trained on, arrives with the result)."""
    training, meta = split(config)
    tags = {
        "sweep": meta.sweep, "stage": stage, "track": meta.method if stage == "pretrain" else meta.track,
        "fraction": meta.fraction, "n_labelled": meta.n_labelled, "seed": training.get("seed"), "group": meta.group,
        "dataset": meta.dataset, "dataset_fingerprint": meta.dataset_fingerprint, "method": meta.method,
        "weights_sha256": meta.weights_sha256,
    }
    if stage == "search":  # what drew this trial's lr and weight decay
        from ssrl.tune.search import STARTUP_TRIALS

        tags["sampler"] = f"optuna TPE, multivariate, {STARTUP_TRIALS} random start-up trials per group"
    return {k: str(v) for k, v in tags.items() if v not in (None, "")}


def run_name(tags: dict[str, str], trial_id: str) -> str:
    """A readable run name: 'ssl_finetune[simclr]@0.25-seed42' for eval, the trial id added for search."""
    base = f"{tags.get('group', tags.get('stage', 'trial'))}-seed{tags.get('seed', '?')}"
    return base if tags.get("stage") == "eval" else f"{tags.get('stage')}-{base}-{trial_id}"


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a result, without Ray's bookkeeping keys."""
    out = {}
    for k, v in metrics.items():
        if k in _RAY_KEYS or k.startswith(_RAY_PREFIXES) or isinstance(v, bool):
            continue
        if isinstance(v, (int, float)) and math.isfinite(v):
            out[k] = float(v)
    return out


class Tracker:
    """The runs of one sweep invocation; re-opening with the same run_id (resume) adds no duplicates."""

    def __init__(self, client: MlflowClient, experiment: str, run_id: str, parent_id: str | None,
                 tags: dict[str, str]) -> None:
        self.client, self.run_id = client, run_id
        commit = tags.get("git_commit", "unknown")
        self.tags = {**tags, "git_commit": commit, "mlflow.source.git.commit": commit.removesuffix("-dirty")}
        exp = client.get_experiment_by_name(experiment)
        self.exp_id = exp.experiment_id if exp else client.create_experiment(
            experiment, self._artifacts(experiment), tags=EXPERIMENT_TAGS)
        for k, v in EXPERIMENT_TAGS.items() if exp is not None else ():
            if k not in exp.tags:  # an experiment made before we set it (a kind the user chose stays)
                client.set_experiment_tag(self.exp_id, k, v)
        self.parent_id = self._reopen(parent_id) or client.create_run(
            self.exp_id, run_name=f"{tags.get('sweep')}-{run_id}",
            tags={**self.tags, "stage": "parent", "ssrl_run": run_id}).info.run_id
        self._open: set[str] = set()
        self.logged_to: dict[str, int] = {}  # reopened run id -> last epoch it logged
        _ACTIVE[run_id] = self

    def _artifacts(self, experiment: str) -> str | None:
        """Next to a sqlite store, not in the working directory (MLflow's ./mlruns default)."""
        uri = self.client.tracking_uri
        if uri.startswith("sqlite:///"):
            return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts" / experiment).as_uri()
        return None  # a server decides (mlflow server --artifacts-destination)

    def _reopen(self, parent_id: str | None) -> str | None:
        """The parent run of an earlier invocation (--resume), if this store has it."""
        if parent_id is None:
            return None
        try:
            run = self.client.get_run(parent_id)
        except Exception:  # noqa: BLE001 - another store (a different --tracking-uri): start a new parent
            return None
        if run.info.experiment_id != self.exp_id:
            return None
        self.client.update_run(parent_id, status="RUNNING")
        return parent_id

    def child(self, key: str, name: str, tags: dict[str, str], params: dict[str, Any] | None) -> str | None:
        """The run for `key` in this invocation: None if it already finished, else its id (new or reopened)."""
        found = self.client.search_runs(
            [self.exp_id], filter_string=f"tags.ssrl_run = '{self.run_id}' and tags.trial_key = '{key}'",
            max_results=5,
        )
        if any(r.info.status == "FINISHED" for r in found):
            return None
        if found:  # an interrupted or failed run of this trial: continue it
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self.logged_to[run_id] = max((m.step for k in EPOCH_METRICS
                                          for m in self.client.get_metric_history(run_id, k)), default=0)
            if "error" in found[0].data.tags:
                self.client.delete_tag(run_id, "error")
        else:
            all_tags = {**self.tags, **tags, "mlflow.parentRunId": self.parent_id, "ssrl_run": self.run_id,
                        "trial_key": key}
            run_id = self.client.create_run(self.exp_id, run_name=name, tags=all_tags).info.run_id
            items = [Param(k, str(v)[:_PARAM_LEN]) for k, v in flatten_for_params(params or {}).items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(run_id, params=items[i : i + 100])
        self._open.add(run_id)
        return run_id

    def log(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        """Numeric metrics at a step (the epoch)."""
        ts = int(time.time() * 1000)
        ms = [Metric(k, v, ts, step) for k, v in numeric(metrics).items()]
        for i in range(0, len(ms), 500):
            self.client.log_batch(run_id, metrics=ms[i : i + 500])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        """Add or overwrite tags of a run."""
        items = [RunTag(k, str(v)[:5000]) for k, v in tags.items() if v is not None]
        if items:
            self.client.log_batch(run_id, tags=items)

    def finish(self, run_id: str, status: str = "FINISHED", **tags: str) -> None:
        """Close a run with its final status and extra tags."""
        self.set_tags(run_id, tags)
        self.client.set_terminated(run_id, status)
        self._open.discard(run_id)

    def summary(self, key: str, name: str, tags: dict[str, Any], metrics: dict[str, float]) -> None:
        """One stage=summary run per results cell (skipped when it already exists)."""
        tags = {k: str(v) for k, v in {**tags, "stage": "summary"}.items() if v is not None}
        run_id = self.child(key, name, tags, None)
        if run_id is not None:
            self.log(run_id, metrics, 0)
            self.finish(run_id)

    def close(self, artifacts: list[Path], status: str = "FINISHED") -> None:
        """Attach the results files to the parent run and end it (and any run left open, as KILLED)."""
        for run_id in list(self._open):
            self.finish(run_id, "KILLED", error=f"sweep ended ({status.lower()}) before this trial")
        for path in artifacts:
            if Path(path).exists():
                self.client.log_artifact(self.parent_id, str(path))
        self.client.set_terminated(self.parent_id, status)
        _ACTIVE.pop(self.run_id, None)


class TrialLogger(Callback):
    """Tune callback on the driver: a nested run per trial with per-epoch metrics, ended by the driver.

    Runs end FINISHED when a trial completes or a scheduler stops it (tag end=stopped), FAILED with the
    reason when it errors. A store that fails mid-sweep costs warnings, never the training.
    """

    def __init__(self, tracker: Tracker, stage: str) -> None:
        self.tracker, self.stage = tracker, stage
        self._runs: dict[str, str | None] = {}
        self._last_step: dict[str, int] = {}
        self._group_n: dict[str, str] = {}  # group -> n_labelled_used, learnt from finished trials
        self._missing_n: dict[str, str] = {}  # run id -> group, runs that ended without n_labelled_used
        self._precision: set[str] = set()  # trials whose precision is tagged

    def __getstate__(self) -> dict[str, Any]:
        return {"run_id": self.tracker.run_id if self.tracker else None, "stage": self.stage}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(_ACTIVE.get(state["run_id"]), state["stage"])  # None outside run_sweep: logs nothing

    def _safe(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.tracker is None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - tracking must not kill a sweep
            msg = scrub(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__,
                        self.tracker.client.tracking_uri)
            print(f"warning: MLflow {what} failed ({msg[:200]})", file=sys.stderr, flush=True)
            return None

    def _run(self, trial: Any) -> str | None:
        if self.tracker is None:
            return None
        if trial.trial_id not in self._runs:
            tags = trial_tags(trial.config, self.stage)
            key = split(trial.config)[1].trial_key or f"{self.stage}/{trial.trial_id}"
            self._runs[trial.trial_id] = run_id = self._safe(
                "create run", self.tracker.child, key, run_name(tags, trial.trial_id), tags, trial_params(trial.config))
            # a reopened run (--resume) already holds the epochs its trial replays from a checkpoint
            self._last_step[trial.trial_id] = self.tracker.logged_to.get(run_id, 0)
        return self._runs[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Open (or reopen) the trial's run."""
        self._run(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        """Per-epoch metrics with step = epoch; the final report's test metrics, best epoch and collapse too."""
        run_id = self._run(trial)
        if run_id is None:
            return
        step = int(result.get("epoch") or result.get("training_iteration") or 0)
        if isinstance(result.get("precision"), str) and trial.trial_id not in self._precision:
            self._precision.add(trial.trial_id)  # what the trial ran at ('auto' resolved on its node)
            self._safe("tag", self.tracker.set_tags, run_id, {"precision": result["precision"]})
            self._safe("param", self.tracker.client.log_param, run_id, "precision_used", result["precision"])
        if step > self._last_step.get(trial.trial_id, 0):
            self._last_step[trial.trial_id] = step
            self._safe("log", self.tracker.log, run_id, {k: result[k] for k in EPOCH_METRICS if k in result}, step)
        if result.get("done"):  # the final report: everything but the per-epoch history
            final = {k: v for k, v in result.items() if k not in EPOCH_METRICS}
            self._safe("log", self.tracker.log, run_id, final, step)
            if "n_labelled_used" in result:  # n_labelled, the few-shot cell's N, is a tag from its meta
                n = str(int(result["n_labelled_used"]))
                self._group_n[split(trial.config)[1].group] = n
                self._safe("tag", self.tracker.set_tags, run_id, {"n_labelled_used": n})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """End the run FINISHED, also when a scheduler stopped the trial early."""
        run_id = self._run(trial)
        if run_id is None:
            return
        done = bool((getattr(trial, "last_result", None) or {}).get("done"))
        self._safe("end run", self.tracker.finish, run_id, "FINISHED", end="completed" if done else "stopped")
        if not done:
            self._missing_n[run_id] = split(trial.config)[1].group

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """End the run FAILED with the reason."""
        run_id = self._run(trial)
        if run_id is not None:
            self._safe("end run", self.tracker.finish, run_id, "FAILED", end="failed", error=error_text(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Stopped trials never learnt n_labelled_used; a finished trial of their group did."""
        for run_id, group in self._missing_n.items():
            if group in self._group_n:
                self._safe("tag", self.tracker.set_tags, run_id, {"n_labelled_used": self._group_n[group]})
        self._missing_n.clear()


def error_text(trial: Any) -> str:
    """The last line of a failed trial's error, for tags and results.json."""
    path = getattr(trial, "error_file", None) or getattr(getattr(trial, "run_metadata", None), "error_filename", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "trial failed"
