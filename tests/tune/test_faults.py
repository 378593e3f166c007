"""Faults a sweep survives: failing and diverging trials, a driver killed with SIGKILL, torn writes."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import launch_module, stage_runs
from mlflow.tracking import MlflowClient

from ssrl.tune import runner

REPO = Path(__file__).resolve().parents[2]
SECRETS = {"AWS_SECRET_ACCESS_KEY": "aws-SECRET-4711", "MLFLOW_TRACKING_PASSWORD": "mlflow-SECRET-4711"}


# --- a trial that raises (its loss turns NaN), and a pretraining that does ----------------------------

DIVERGED = "ssrl.train.loop.TrainingDiverged: loss became nan in epoch 1; lower the learning rate"


def test_failed_pretraining_comes_back_as_an_error_not_a_crash(tmp_path, monkeypatch):
    """ensure_pretrained turns a pretraining trial that failed after its retries into {method, seed, error}."""
    from types import SimpleNamespace

    from ssrl.config import to_dict
    from ssrl.tune import stages
    from ssrl.tune.meta import TrialMeta, trial_space
    from ssrl.tune.spec import load_sweep

    spec = load_sweep("pretrain", "smoke")
    data = SimpleNamespace(root="/data", sampling_rate=100, fingerprint="f" * 64, name="synthetic")
    cfg = stages.pretrain_config(spec, "simclr", spec.seeds[0], data)
    job = trial_space(to_dict(cfg), TrialMeta("pretrain", "pretrain", group="simclr", method="simclr"),
                      f"simclr/seed{cfg.seed}")
    failed = SimpleNamespace(config=job, checkpoint=None, metrics={"epoch": 1},
                             error=RuntimeError(f"Failure # 2\n{DIVERGED}"))
    monkeypatch.setattr(stages, "_run", lambda *args, **kwargs: [failed])
    ctx = stages.Context(storage=str(tmp_path), run_id="r", dataset=data, cpus=1, gpus=0, max_concurrent=None,
                         resume=False)
    assert stages.ensure_pretrained(ctx, spec, ("simclr",)) == [{"method": "simclr", "seed": cfg.seed,
                                                                 "error": DIVERGED}]
    assert not list(tmp_path.rglob("DONE"))  # nothing published


def test_failed_trials_are_retried_then_recorded_and_the_sweep_goes_on(edited_sweeps, ray_session, synth_root,
                                                                       cache_dir, tmp_path, monkeypatch, capfd):
    """random_frozen diverges (lr 1e30): retried max_failures times, then recorded failed with the reason.
    The pretraining failed too (as the test above shows it reported), so ssl_frozen is recorded failed
    without running. supervised completes."""
    from ssrl.tune import stages

    monkeypatch.setattr(stages, "ensure_pretrained", lambda ctx, spec, methods: [
        {"method": "simclr", "seed": spec.seeds[0], "error": DIVERGED}])
    sweeps = edited_sweeps(scarcity={
        "scales.smoke.tracks": ["supervised", "random_frozen", "ssl_frozen"],
        "scales.smoke.pretrain_methods": ["simclr"],
        "scales.smoke.fractions": [1.0],
        "scales.smoke.seeds": [42],
        "scales.smoke.track_train": {"random_frozen": {"lr": 1.0e30, "weight_decay": 1.0}},
        "scales.smoke.resources.max_failures": 1,
    })
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    out, storage = tmp_path / "out", tmp_path / "storage"
    res = runner.run_sweep(runner.LaunchOptions(sweep="scarcity", scale="smoke", data_root=str(synth_root),
                                                out=str(out), storage=str(storage), sweeps_dir=str(sweeps),
                                                max_concurrent=2))
    printed = capfd.readouterr()
    assert json.loads((out / "scarcity" / "results.json").read_text()) == json.loads(json.dumps(res))
    cells = {c["track"]: c for c in res["cells"]}
    assert (res["n_runs"], res["n_failed"]) == (3, 2)
    assert cells["supervised"]["seeds"] == [42] and cells["supervised"]["n_failed"] == 0
    for track, reason in (("random_frozen", "loss became nan"), ("ssl_frozen", "pretraining simclr failed")):
        (failed,) = cells[track]["failed"]
        assert cells[track]["seeds"] == [] and failed["seed"] == 42 and reason in failed["error"], failed
    assert "TrainingDiverged" in cells["ssl_frozen"]["failed"][0]["error"]
    assert "3 runs, 2 failed" in printed.out
    # retried as configured: max_failures=1 is two attempts, both in the trial's error file
    (error,) = storage.glob(f"scarcity-{res['run_id']}-eval/*/error.txt")
    assert error.read_text().count("Failure # ") == 2, error.read_text()[-3000:]

    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    evals = stage_runs(client, res, "eval")
    assert len(evals) == 2 and len({r.data.tags["trial_key"] for r in evals}) == 2
    for r in evals:
        if r.data.tags["track"] == "supervised":
            assert r.info.status == "FINISHED"
        else:
            assert r.info.status == "FAILED" and "loss became" in r.data.tags["error"]
    (parent,) = stage_runs(client, res, "parent")
    assert parent.info.status == "FINISHED"
    # no secret from the environment lands in the store, the artifacts or the output
    stored = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for value in SECRETS.values():
        assert value.encode() not in stored and value not in printed.out + printed.err


def test_a_pretraining_that_really_fails_skips_exactly_the_ssl_trials_of_its_method(edited_sweeps, ray_session,
                                                                                    synth_root, cache_dir, tmp_path,
                                                                                    capfd):
    """No mock: the pretrain sweep file sets temperature 1e-7, below NT-Xent's floor (ssrl.ssl.losses.MIN_TEMPERATURE),
    which only SimCLR reads. The driver's checks pass it (it is positive; built-in methods are not run before Ray), so
    SimCLR's pretraining trial raises at its first loss, Tune records it failed, and masked pretrains and publishes.
    Then the SSL tracks of simclr are skipped with that reason in results.json, and every other trial runs: the
    masked SSL tracks on masked's encoder, and supervised. (Should the driver learn to refuse this temperature, the
    sweep stops before Ray with a ConfigError and this test needs another in-trial failure.)"""
    sweeps = edited_sweeps(
        pretrain={"scales.smoke.train.temperature": 1.0e-7, "scales.smoke.train.epochs": 1},
        scarcity={"scales.smoke.tracks": ["supervised", "ssl_finetune", "ssl_frozen"],
                  "track_train": {"ssl_frozen": {"lr": 0.01}},
                  "scales.smoke.pretrain_methods": ["simclr", "masked"],
                  "scales.smoke.fractions": [1.0],
                  "scales.smoke.seeds": [42, 52],
                  "scales.smoke.train.epochs": 1,
                  "scales.smoke.resources.max_failures": 0})
    out, storage = tmp_path / "out", tmp_path / "storage"
    res = runner.run_sweep(runner.LaunchOptions(sweep="scarcity", scale="smoke", data_root=str(synth_root),
                                                out=str(out), storage=str(storage), sweeps_dir=str(sweeps),
                                                max_concurrent=2))
    printed = capfd.readouterr().out
    assert json.loads((out / "scarcity" / "results.json").read_text()) == json.loads(json.dumps(res))

    # the pretraining ran in Ray and failed there: simclr's trial has an error file naming the temperature;
    # masked's pretraining was published (DONE), simclr's was not
    (error,) = storage.glob(f"pretrain-{res['run_id']}/*/error.txt")
    assert "temperature must be a finite number >= 1e-06; got 1e-07" in error.read_text()
    assert [p.parent.name.split("-")[0] for p in (storage / "pretrained").glob("*/DONE")] == ["masked"]

    # results.json: 2 tracks x 2 seeds of simclr skipped, with the trial's own reason; the rest ran
    reason = "skipped: pretraining simclr failed: ValueError: temperature must be a finite number >= 1e-06; got 1e-07"
    cells = {(c["track"], c.get("method")): c for c in res["cells"]}
    assert set(cells) == {("supervised", None), ("ssl_finetune", "simclr"), ("ssl_frozen", "simclr"),
                          ("ssl_finetune", "masked"), ("ssl_frozen", "masked")}
    assert (res["n_runs"], res["n_failed"], res["n_skipped"]) == (10, 4, 4)
    for (_, method), cell in cells.items():
        if method == "simclr":
            assert cell["seeds"] == [] and [(f["seed"], f["error"]) for f in cell["failed"]] == [
                (42, reason), (52, reason)], cell
        else:
            assert cell["seeds"] == [42, 52] and cell["n_failed"] == 0, cell
    assert res["pretraining"]["methods"] == ["simclr", "masked"]
    assert "SKIPPED 4 trials of ssl_finetune[simclr]@1.0, ssl_frozen[simclr]@1.0 " in printed

    # the evaluation started exactly the trials that did not need simclr, and the SSL ones loaded masked's encoder
    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    evals = stage_runs(client, res, "eval")
    assert sorted((r.data.tags["track"], r.data.tags.get("method", "")) for r in evals) == sorted(
        [("supervised", "")] * 2 + [("ssl_finetune", "masked")] * 2 + [("ssl_frozen", "masked")] * 2)
    assert all(r.info.status == "FINISHED" for r in evals)
    (masked,) = (storage / "pretrained").glob("masked-*")
    assert {r.data.params.get("pretrained_uri") for r in evals if r.data.tags["track"] != "supervised"} == {
        str(masked)}


# --- the driver killed with SIGKILL mid-sweep, then the same command with --resume --------------------


def _finished(experiment: Path) -> dict[str, bytes]:
    """Trials of a Tune experiment whose last result is final: {trial dir name: result.json bytes}."""
    out = {}
    for path in experiment.glob("*/result.json"):
        data = path.read_bytes()
        lines = data.strip().splitlines()
        if lines and json.loads(lines[-1]).get("done"):
            out[path.parent.name] = data
    return out


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep ended (rc {proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}" + (f":\n{log.read_text()[-3000:]}" if log else ""))
        time.sleep(0.25)
    return value


def test_driver_killed_with_sigkill_resumes_only_what_was_unfinished(edited_sweeps, ray_session, synth_root, cache_dir,
                                                                     tmp_path):
    """launch.py joins the session's Ray (as it joins a cluster with --address), is killed with SIGKILL once
    a trial finished, and the same command with --resume finishes the rest (here in-process)."""
    import ray

    sweeps = edited_sweeps(scarcity={
        "scales.smoke.tracks": ["supervised", "random_frozen"],
        "scales.smoke.fractions": [1.0],
        "scales.smoke.seeds": [42, 52],
        "track_train": {"random_frozen": {"lr": 0.01}},
    })
    out, storage = tmp_path / "out", tmp_path / "storage"
    args = ["--sweep", "scarcity", "--scale", "smoke", "--data-root", str(synth_root), "--out", str(out),
            "--storage", str(storage), "--sweeps-dir", str(sweeps),
            "--address", ray.get_runtime_context().gcs_address]
    log = tmp_path / "driver.log"
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, "launch.py", *args], cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        state = out / "scarcity" / "state.json"
        _wait(state.exists, 240, "state.json", proc, log)
        run_id = json.loads(state.read_text())["run_id"]
        experiment = storage / f"scarcity-{run_id}-eval"
        _wait(lambda: _finished(experiment), 300, "a finished trial", proc, log)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        done_before = _finished(experiment)  # what finished up to the kill
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    # Ray ends the dead driver's trial actors; wait until their CPUs are back
    _wait(lambda: ray.available_resources().get("CPU", 0) >= ray.cluster_resources()["CPU"], 60,
          "the killed driver's trials to end")
    assert 1 <= len(done_before) < 4, "the kill must land while trials are unfinished"
    assert not (out / "scarcity" / "results.json").exists()

    argv = launch_module().parse_args([*args, "--resume"])  # the same command line, plus --resume
    res = runner.run_sweep(runner.LaunchOptions(**vars(argv)))

    assert res["run_id"] == run_id and (res["n_runs"], res["n_failed"]) == (4, 0)
    assert all(c["seeds"] == [42, 52] for c in res["cells"])
    after = _finished(experiment)
    assert len(after) == 4 and len(list(experiment.glob("*/result.json"))) == 4
    for name, data in done_before.items():  # trials finished before the kill did not run again
        assert after[name] == data, f"{name} ran again after --resume"

    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    exp = client.get_experiment_by_name("ssrl-scarcity")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert {r.data.tags.get("ssrl_run") for r in runs} == {run_id}
    assert [r.data.tags["stage"] for r in runs].count("parent") == 1
    evals = [r for r in runs if r.data.tags["stage"] == "eval"]
    assert len(evals) == 4 and len({r.data.tags["trial_key"] for r in evals}) == 4
    assert all(r.info.status == "FINISHED" for r in runs), [(r.data.tags["stage"], r.info.status) for r in runs]
    for r in evals:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_score")]
        assert steps == sorted(set(steps)) and steps[0] == 1, (r.data.tags["trial_key"], steps)


def test_restore_takes_the_next_checkpoint_when_the_recorded_one_was_replaced(tmp_path):
    """The window the SIGKILL test can hit: Tune deleted checkpoint 2 for 3, the driver died before saving
    that. The trial restores from 3 (registered, so complete), not 4 (a copy that may be cut short)."""
    from types import SimpleNamespace

    from ray import tune

    from ssrl.tune.trainables import NewestCheckpoint

    class Base:
        def restore(self, checkpoint_path):
            return checkpoint_path

    class Trial(NewestCheckpoint, Base):
        pass

    trial = tmp_path / "trial_0"
    for i in (1, 3, 4):
        (trial / f"checkpoint_00000{i}").mkdir(parents=True)
    recorded = SimpleNamespace(checkpoint=tune.Checkpoint(str(trial / "checkpoint_000002")), metrics={"epoch": 2})
    restored = Trial().restore(recorded)
    assert Path(restored.checkpoint.path).name == "checkpoint_000003" and restored.metrics == {"epoch": 2}
    present = SimpleNamespace(checkpoint=tune.Checkpoint(str(trial / "checkpoint_000001")), metrics={})
    assert Trial().restore(present) is present  # an existing checkpoint is used as recorded


def test_an_interrupted_stage_stops_the_sweep_instead_of_recording_failures(monkeypatch, tmp_path):
    """Ctrl-C makes Tune save and return early; the stage must raise, not hand back unfinished trials."""
    from types import SimpleNamespace

    from ssrl.tune import stages

    class Interrupted:
        def __init__(self, *args, **kwargs):
            pass

        def fit(self):
            trials = [SimpleNamespace(status="TERMINATED"), SimpleNamespace(status="PENDING")]
            return SimpleNamespace(_experiment_analysis=SimpleNamespace(trials=trials))

    monkeypatch.setattr(stages.tune, "Tuner", Interrupted)
    ctx = stages.Context(storage=str(tmp_path), run_id="r", dataset=None, cpus=1, gpus=0, max_concurrent=None,
                         resume=False)
    with pytest.raises(KeyboardInterrupt, match="1 trials unfinished"):
        stages._run(ctx, "x-r-eval", lambda config: None, {}, {"cpu": 1}, stages.tune.TuneConfig(), "eval")


# --- an interrupted write leaves the old file or the new one, never a torn one ---------------------------

WRITER = """
import json, os, resource, signal, sys
from pathlib import Path
import torch
from ssrl.report import write_json_atomic
from ssrl.train.loop import atomic_torch_save
out, which, limit = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
write = {"json": lambda: write_json_atomic(out / "results.json", {"per_seed": list(range(300_000))}),
         "torch": lambda: atomic_torch_save({"w": torch.zeros(1_000_000)}, out / "state.pt")}[which]
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # no file of this process may grow past limit bytes
try:  # Python ignores SIGXFSZ, so the write that crosses the limit raises EFBIG halfway through the new version
    write()
except Exception:  # OSError from json's write; torch wraps it in a RuntimeError
    print(json.dumps(sorted(os.listdir(out))), flush=True)
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # now the same write kills the process where it stands, like SIGKILL
write()
"""
OLD = {"json": ("results.json", {"per_seed": [1, 2, 3]}), "torch": ("state.pt", {"w": [1.0, 2.0, 3.0]})}


@pytest.mark.parametrize("which", ["json", "torch"])
def test_a_write_cut_off_midway_leaves_the_previous_file(tmp_path, which):
    """The new version (2-4 MB) is cut off at exactly 1 MB: once by an error, once by the process dying there.
    Both times the previous version stays whole and loadable; the error leaves no temp file behind."""
    import torch

    from ssrl.report import write_json_atomic
    from ssrl.train.loop import atomic_torch_save

    name, old = OLD[which]
    target, limit = tmp_path / name, 1 << 20
    if which == "json":
        write_json_atomic(target, old)
    else:
        atomic_torch_save({"w": torch.tensor(old["w"])}, target)
    before = target.read_bytes()
    proc = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path), which, str(limit)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGXFSZ, proc.stderr[-3000:]  # died in the write, not after it
    (line,) = proc.stdout.splitlines()  # printed only when the first write raised
    assert json.loads(line) == [name]  # the failed write cleaned up after itself
    assert target.read_bytes() == before
    if which == "json":
        assert json.loads(target.read_text()) == old
    else:
        assert torch.load(target, weights_only=True)["w"].tolist() == old["w"]
    # the killed write could not clean up: its first `limit` bytes sit in a hidden temp file, not in the target
    (left,) = [p for p in tmp_path.iterdir() if p != target]
    assert left.name.startswith(f".{name}.") and left.name.endswith(".tmp") and left.stat().st_size == limit


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    """torch.save raising (here: an object it cannot pickle) leaves state.pt as it was and no temp file."""
    import threading

    import torch

    from ssrl.train.loop import atomic_torch_save

    atomic_torch_save({"i": 1}, tmp_path / "state.pt")
    with pytest.raises(TypeError, match="pickle"):
        atomic_torch_save({"i": 2, "lock": threading.Lock()}, tmp_path / "state.pt")
    assert torch.load(tmp_path / "state.pt", weights_only=True) == {"i": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def _sleepy(config):
    from ray import tune

    time.sleep(config["sleep_s"])
    tune.report({"value": config["value"], "done": True})


def test_resume_resolves_sample_from_values_of_trials_generated_after_the_stop(ray_session, tmp_path):
    """Tune keeps sample_from values as placeholders; trials it creates only after --resume must still get
    real values (they got ("__fn_ph", id) tuples when the restore did not pass the param space again)."""
    from ray import tune

    from ssrl.tune import stages

    class CtrlCAfterFirstTrial(tune.Callback):  # restored with the run config: once per test, not per run
        def __init__(self, marker: Path) -> None:
            self.marker = marker

        def on_trial_complete(self, iteration, trials, trial, **info):
            if not self.marker.exists():
                self.marker.touch()
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does: Tune saves the experiment and returns

    values = {"a": "uri-a", "b": "uri-b", "c": "uri-c"}
    space = {"group": tune.grid_search(list(values)), "sleep_s": 0.0,
             "value": tune.sample_from(lambda s: values[s.config["group"]])}
    ctx = stages.Context(storage=str(tmp_path), run_id="r", dataset=None, cpus=1, gpus=0, max_concurrent=1,
                         resume=False, callbacks=lambda stage: [CtrlCAfterFirstTrial(tmp_path / "interrupted")])
    one_at_a_time = stages.tune.TuneConfig(max_concurrent_trials=1)
    with pytest.raises(KeyboardInterrupt, match="unfinished"):
        stages._run(ctx, "x-r-eval", _sleepy, space, {"cpu": 1}, one_at_a_time, "eval")
    grid = stages._run(dataclasses.replace(ctx, resume=True), "x-r-eval", _sleepy, space, {"cpu": 1}, one_at_a_time,
                       "eval")
    assert sorted((r.config["group"], r.metrics.get("value")) for r in grid) == sorted(values.items())
