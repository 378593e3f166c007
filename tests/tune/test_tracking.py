"""MLflow tracking: a run per trial with tags and per-epoch history, summaries, resume, a real server."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import local_mlflow
import pytest
from helpers import stage_runs
from mlflow.tracking import MlflowClient

from ssrl.config import TRACKS, FinetuneConfig
from ssrl.tune import options, runner
from ssrl.tune.meta import TrialMeta, trial_space
from ssrl.tune.spec import Cell, load_sweep
from ssrl.tune.tracking import Tracker, TrialLogger, connect, redact, scrub

TRIAL_TAGS = ("sweep", "stage", "track", "n_labelled_used", "seed", "group", "dataset", "dataset_fingerprint",
              "git_commit")


def check_tracked(client: MlflowClient, results: dict) -> None:
    """Every seed run of results.json has exactly one finished eval run with tags, metrics and history."""
    sweep, metric = results["sweep"], results["metric"]
    (parent,) = stage_runs(client, results, "parent")
    commit = parent.data.tags["git_commit"]  # the commit when this sweep started
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", commit)
    evals = stage_runs(client, results, "eval")
    by_key: dict[tuple[str, str], list] = {}
    for r in evals:
        by_key.setdefault((r.data.tags["group"], r.data.tags["seed"]), []).append(r)
    rows = [(cell, row) for cell in results["cells"] for row in cell["per_seed"]]
    assert len(evals) == len(rows) == results["n_runs"] - results["n_failed"]
    for cell, row in rows:
        label = f"{cell['track']}[{cell['method']}]" if cell.get("method") else cell["track"]
        group = f"{label}@{cell['fraction']}" if sweep == "scarcity" else f"{label}@N{cell['n_labelled']}"
        group += ":running" if cell.get("bn_stats") == "running" else ""  # the reference's BN protocol
        (run,) = by_key[(group, str(row["seed"]))]
        tags, m = run.data.tags, run.data.metrics
        assert run.info.status == "FINISHED"
        assert {k for k in TRIAL_TAGS} <= set(tags), set(TRIAL_TAGS) - set(tags)
        assert (tags["sweep"], tags["stage"], tags["track"]) == (sweep, "eval", cell["track"])
        assert tags.get("method") == cell.get("method")  # SSL tracks carry their pretraining method
        assert tags["n_labelled_used"] == str(row["n_labelled_used"])  # what it trained on, from its result
        assert tags.get("n_labelled") == (None if sweep == "scarcity" else str(cell["n_labelled"]))  # the key N
        assert tags["dataset_fingerprint"] == results["dataset"]["fingerprint"]
        assert tags["dataset"] == results["dataset"]["name"]
        assert tags["git_commit"] == commit
        if sweep == "scarcity":
            assert tags["fraction"] == str(cell["fraction"])
        assert m[metric] == pytest.approx(row[metric])
        assert m["best_epoch"] == row["best_epoch"]
        assert m.get("collapsed") == (None if row["collapsed"] is None else int(row["collapsed"]))  # None: frozen
        params = run.data.params
        assert params["seed"] == str(row["seed"]) and float(params["lr"]) == pytest.approx(row["lr"])
        # params are the trial's training config (and where its encoder came from); what the trial is, in tags
        training = {f.name for f in dataclasses.fields(FinetuneConfig)}
        assert {"lr", "weight_decay", "epochs", "batch_size", "track", "fraction", "bn_stats"} <= set(params)
        assert set(params) - {"pretrained_uri", "precision_used"} <= training  # precision_used: what it ran at
        assert ("pretrained_uri" in params) == bool(cell.get("method"))
        fit = TRACKS[cell["track"]].fit  # a rule fits nothing (no train_loss); no control has an lr schedule
        for name in (("train_loss",) if fit != "rule" else ()) + ("val_score",) + (("lr",) if fit == "sgd" else ()):
            steps = [h.step for h in client.get_metric_history(run.info.run_id, name)]
            assert steps == list(range(1, row["epochs_run"] + 1)), (name, steps)
    summaries = {r.data.tags["group"]: r for r in stage_runs(client, results, "summary")}
    assert len(summaries) == len(stage_runs(client, results, "summary")) == len(results["cells"])
    for cell in results["cells"]:
        key = next(g for g in summaries if summaries[g].data.tags["track"] == cell["track"]
                   and summaries[g].data.tags.get("method") == cell.get("method")
                   and summaries[g].data.tags.get("fraction", "") == str(cell.get("fraction", ""))
                   and summaries[g].data.tags.get("n_labelled", "") == str(cell.get("n_labelled", ""))
                   and g.endswith(":running") == (cell.get("bn_stats") == "running"))
        assert summaries[key].data.tags["n_labelled_used"] == str(cell["n_labelled_used"])
        m = summaries[key].data.metrics
        assert m["mean"] == pytest.approx(cell["mean"]) and m["n_seeds"] == len(cell["seeds"])
        if cell["collapse_rate"] is None:  # frozen tracks: no collapse verdict, nothing logged
            assert "collapse_rate" not in m
        else:
            assert m["collapse_rate"] == pytest.approx(cell["collapse_rate"])
        assert m["best_epoch_mean"] == pytest.approx(cell["best_epoch_mean"])
        if cell.get("ci95"):
            assert (m["ci95_low"], m["ci95_high"]) == pytest.approx(tuple(cell["ci95"]))
            assert m["std"] == pytest.approx(cell["std"])
    assert parent.info.status == "FINISHED"
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.json", "results.md", f"{sweep}.png"} <= names
    exp = client.get_experiment_by_name(f"ssrl-{sweep}")
    unfinished = client.search_runs([exp.experiment_id], f"tags.ssrl_run = '{results['run_id']}' "
                                                          "and attributes.status != 'FINISHED'")
    assert not unfinished, [(r.info.run_name, r.info.status) for r in unfinished]


# --- the driver-side callback, with stand-in trials (no Ray run) --------------------------------------


def _trial(trial_id: str, seed: int, **extra) -> SimpleNamespace:
    meta = TrialMeta("scarcity", "search", group="supervised@0.25", track="supervised", fraction=0.25,
                     dataset="synthetic", dataset_fingerprint="abc")
    config = trial_space({"seed": seed, "lr": 0.001, "track": "supervised", "fraction": 0.25}, meta, meta.group)
    return SimpleNamespace(trial_id=trial_id, config=config, last_result={}, error_file=None, **extra)


def _epoch(logger: TrialLogger, trial, epoch: int, **extra) -> None:
    result = {"epoch": epoch, "train_loss": 1.0 / epoch, "val_score": 0.5 + epoch / 10, "lr": 0.001, **extra}
    trial.last_result = result
    logger.on_trial_result(0, [], trial, result)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the callback tests (creating its tables takes seconds)."""
    return connect(f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/m.db")


def test_trial_logger_ends_completed_stopped_and_failed_runs(store, tmp_path):
    client = store
    tracker = Tracker(client, "ssrl-test", "run1", None, {"sweep": "scarcity", "git_commit": "c0ffee"})
    logger = TrialLogger(tracker, "search")
    done, stopped, failed = _trial("t_done", 1), _trial("t_stop", 2), _trial("t_fail", 3)
    for t in (done, stopped, failed):
        logger.on_trial_start(0, [], t)
    for epoch in (1, 2, 3):
        _epoch(logger, done, epoch)
    _epoch(logger, done, 3, done=True, test_macro_auroc=0.8, best_epoch=2, collapsed=0, n_labelled_used=77,
           time_total_s=9.0, training_iteration=4)
    logger.on_trial_complete(0, [], done)
    _epoch(logger, stopped, 1)  # ASHA stops it after one epoch: no final report, no n_labelled_used
    logger.on_trial_complete(0, [], stopped)
    (tmp_path / "error.txt").write_text("Failure # 1\nTraceback ...\nRuntimeError: loss is NaN at epoch 2\n")
    failed.error_file = str(tmp_path / "error.txt")
    logger.on_trial_error(0, [], failed)
    logger.on_experiment_end([])

    runs = {r.data.tags["seed"]: r for r in client.search_runs([tracker.exp_id], "tags.stage = 'search'")}
    assert {s: r.info.status for s, r in runs.items()} == {"1": "FINISHED", "2": "FINISHED", "3": "FAILED"}
    r1, r2, r3 = runs["1"], runs["2"], runs["3"]
    assert r1.data.tags["end"] == "completed" and r2.data.tags["end"] == "stopped"
    assert r1.data.tags["sampler"] == "optuna TPE, multivariate, 3 random start-up trials per group"
    assert r3.data.tags["error"] == "RuntimeError: loss is NaN at epoch 2"
    assert r1.data.tags["n_labelled_used"] == r2.data.tags["n_labelled_used"] == "77"  # the group's, from r1
    assert "n_labelled" not in r1.data.tags  # a fraction's trials have no N
    assert r1.data.tags["git_commit"] == "c0ffee" and r1.data.tags["mlflow.parentRunId"] == tracker.parent_id
    assert r1.data.metrics["test_macro_auroc"] == 0.8 and r1.data.metrics["collapsed"] == 0
    assert "time_total_s" not in r1.data.metrics and "training_iteration" not in r1.data.metrics
    history = client.get_metric_history(r1.info.run_id, "val_score")
    assert [(h.step, round(h.value, 6)) for h in history] == [(1, 0.6), (2, 0.7), (3, 0.8)]  # final adds none
    assert r1.data.params["lr"] == "0.001" and r1.data.tags["group"] == "supervised@0.25" and "group" not in r1.data.params

    # a resumed invocation (same ssrl run id and parent) finds finished trials and logs nothing twice
    again = Tracker(client, "ssrl-test", "run1", tracker.parent_id, {"sweep": "scarcity"})
    assert again.parent_id == tracker.parent_id
    assert again.child("search/t_done", "x", {}, {}) is None
    assert again.child("search/t_fail", "x", {}, {}) == r3.info.run_id  # a failed trial is continued
    assert "error" not in client.get_run(r3.info.run_id).data.tags
    again.close([], "FAILED")
    assert client.get_run(r3.info.run_id).info.status == "KILLED"
    assert len(client.search_runs([tracker.exp_id], "tags.stage = 'parent'")) == 1


def test_a_resumed_trial_replaying_epochs_from_its_checkpoint_logs_each_epoch_once(store):
    """Killed after logging epoch 3 but checkpointed at 2: on --resume the trial reports 3 again."""
    tracker = Tracker(store, "ssrl-test", "run3", None, {"sweep": "scarcity"})
    logger = TrialLogger(tracker, "search")
    trial = _trial("t_kill", 1)
    logger.on_trial_start(0, [], trial)
    for epoch in (1, 2, 3):
        _epoch(logger, trial, epoch)
    # the driver dies here; a new invocation with the same run id reopens the trial's run
    again = TrialLogger(Tracker(store, "ssrl-test", "run3", tracker.parent_id, {"sweep": "scarcity"}), "search")
    restarted = _trial("t_kill", 1)
    again.on_trial_start(0, [], restarted)
    for epoch in (3, 4):
        _epoch(again, restarted, epoch)
    (run,) = store.search_runs([tracker.exp_id], "tags.ssrl_run = 'run3' and tags.stage = 'search'")
    assert [h.step for h in store.get_metric_history(run.info.run_id, "val_score")] == [1, 2, 3, 4]


def test_trial_logger_pickles_without_the_store(store):
    """Tune pickles callbacks into tuner.pkl: no client or URI goes there; a restore finds the live tracker."""
    tracker = Tracker(store, "ssrl-test", "run2", None, {"sweep": "scarcity"})
    blob = pickle.dumps(TrialLogger(tracker, "eval"))
    assert b"sqlite" not in blob and b"m.db" not in blob
    restored = pickle.loads(blob)
    assert restored.tracker is tracker and restored.stage == "eval"
    tracker.close([])
    orphan = pickle.loads(blob)  # outside run_sweep: a no-op logger, not a crash
    assert orphan.tracker is None
    orphan.on_trial_start(0, [], _trial("t", 1))


def test_pretraining_trials_are_tagged_by_their_meta_and_params_hold_training_fields_only():
    from ssrl.tune.tracking import trial_params, trial_tags

    meta = TrialMeta("pretrain", "pretrain", group="byol", method="byol", dataset="synthetic")
    config = trial_space({"method": "byol", "seed": 7, "lr": 0.001}, meta, "byol/seed7")
    tags = trial_tags(config, "pretrain")
    assert (tags["method"], tags["track"], tags["group"], tags["seed"], tags["sweep"]) == (
        "byol", "byol", "byol", "7", "pretrain")
    assert trial_params(config) == {"method": "byol", "seed": 7, "lr": 0.001}
    ssl = trial_space({"seed": 7}, meta.replace(stage="eval", pretrained_uri="/s/p/byol-x"), "ssl_finetune[byol]@0.1")
    assert trial_params(ssl) == {"seed": 7, "pretrained_uri": "/s/p/byol-x"}  # where its encoder came from


def test_a_meta_key_typo_is_an_error_not_a_silent_new_key():
    from ssrl.tune.meta import split

    config = trial_space({"seed": 1}, TrialMeta("fewshot", "eval", group="scratch@N70", n_labelled=70), "scratch@N70")
    training, meta = split(config)
    assert training == {"seed": 1} and meta.n_labelled == 70 and meta.fraction is None
    config["meta"]["n_labeled"] = 70
    with pytest.raises(ValueError, match="unknown key.*n_labeled"):
        split(config)
    with pytest.raises(TypeError):
        TrialMeta("fewshot", "eval").replace(cell_track="scratch")


def test_credentials_never_printed():
    uri = "http://alice:s3cret@mlflow.example:5000"
    assert redact(uri) == "http://***@mlflow.example:5000"
    msg = scrub(f"API request to {uri}/api/2.0/x failed; auth alice:s3cret", uri)
    assert "s3cret" not in msg and "mlflow.example:5000" in msg
    assert redact("sqlite:///runs/mlflow.db") == "sqlite:///runs/mlflow.db"


# --- end to end: the session's smoke sweeps (sqlite) -------------------------------------------------


def test_smoke_sweeps_are_tracked_in_sqlite(smoke_runs):
    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_runs.out}/mlflow.db")
    results = {s: json.loads((smoke_runs.out / s / "results.json").read_text()) for s in ("pretrain", "scarcity",
                                                                                            "fewshot")}
    for sweep in ("scarcity", "fewshot"):
        check_tracked(client, results[sweep])
    # artifacts next to the store, not in the working directory
    (parent,) = stage_runs(client, results["scarcity"], "parent")
    assert parent.info.artifact_uri.startswith(Path(smoke_runs.out).as_uri())
    # searched trials (some stopped by ASHA) all ended FINISHED with their group's tags
    searched = stage_runs(client, results["fewshot"], "search")
    spec = load_sweep("fewshot", "smoke")
    assert len(searched) == spec.search.samples_per_group * len(spec.searched_cells)
    assert all(r.info.status == "FINISHED" for r in searched)
    assert all(r.data.tags["n_labelled"] in ("10", "20") and r.data.tags["end"] in ("completed", "stopped")
               for r in searched)
    pre = stage_runs(client, results["pretrain"], "pretrain")
    assert sorted(r.data.tags["method"] for r in pre) == ["byol", "masked", "simclr"]
    assert all(r.data.tags["track"] == r.data.tags["method"] == r.data.tags["group"] for r in pre)
    assert all(len(client.get_metric_history(r.info.run_id, "train_loss")) == 2 for r in pre)


def test_resume_adds_no_duplicate_runs(smoke_runs, synth_root):
    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_runs.out}/mlflow.db")
    exp = client.get_experiment_by_name("ssrl-scarcity")
    before = client.search_runs([exp.experiment_id], max_results=1000)
    runner.run_sweep(runner.LaunchOptions(sweep="scarcity", scale="smoke", data_root=str(synth_root),
                                          out=str(smoke_runs.out), storage=smoke_runs.storage, max_concurrent=2,
                                          resume=True))
    res = json.loads((smoke_runs.out / "scarcity" / "results.json").read_text())
    after = client.search_runs([exp.experiment_id], max_results=1000)
    assert sorted(r.info.run_id for r in after) == sorted(r.info.run_id for r in before)
    check_tracked(client, res)


# --- a real MLflow server (an unreachable one: tests/test_launch_cli.py) -----------------------------


@pytest.fixture(scope="module", autouse=True)
def _server_boot(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 in its own process group, started with the module so that its
    boot (10-30 s on two busy cores) overlaps the other tests; stopped by its pid afterwards."""
    folder, port = tmp_path_factory.mktemp("mlflow-server"), local_mlflow.free_port()
    proc = local_mlflow.start(f"sqlite:///{folder}/s.db", port, folder / "server.log",
                        "--artifacts-destination", str(folder / "artifacts"), cwd=folder)
    try:
        yield SimpleNamespace(proc=proc, port=port, url=f"http://127.0.0.1:{port}", log=folder / "server.log")
    finally:
        local_mlflow.stop(proc)


@pytest.fixture
def mlflow_server(_server_boot):
    """The module's server, once /health answers."""
    boot = _server_boot
    assert local_mlflow.wait_healthy(boot.proc, boot.port), boot.log.read_text()[-2000:]
    return boot


def test_sweep_against_a_real_mlflow_server(smoke_runs, synth_root, mlflow_server, tmp_path, monkeypatch, capfd):
    """A reduced scarcity sweep (2 trials) logged over HTTP; the URI's password is nowhere to be found."""
    load = options.load_sweep

    def reduced(name: str, scale: str, *args, **kwargs):
        spec = load(name, scale, *args, **kwargs)
        if name != "scarcity":
            return spec
        return dataclasses.replace(spec, seeds=(42,), cells=(Cell("supervised", 0.25), Cell("ssl_finetune", 0.25, method="simclr")))

    monkeypatch.setattr(options, "load_sweep", reduced)
    uri = f"http://carol:pw-XYZ-123@127.0.0.1:{mlflow_server.port}"
    runner.run_sweep(runner.LaunchOptions(sweep="scarcity", scale="smoke", data_root=str(synth_root),
                                          out=str(tmp_path / "out"), storage=smoke_runs.storage, max_concurrent=2,
                                          tracking_uri=uri))
    res = json.loads((tmp_path / "out" / "scarcity" / "results.json").read_text())
    client = MlflowClient(tracking_uri=mlflow_server.url)
    check_tracked(client, res)
    exp = client.get_experiment_by_name("ssrl-scarcity")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert all(r.info.status == "FINISHED" for r in runs)
    texts = [json.dumps([r.data.tags, r.data.params]) for r in runs]
    captured = capfd.readouterr()
    assert not any("pw-XYZ-123" in t for t in [*texts, captured.out, captured.err])
    tune_files = [p for p in Path(smoke_runs.storage).glob(f"scarcity-{res['run_id']}-*/*") if p.is_file()]
    assert tune_files and not any(b"pw-XYZ-123" in p.read_bytes() for p in tune_files)
