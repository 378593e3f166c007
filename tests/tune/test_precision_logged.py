"""Every trial records the precision it ran at: results.json rows and the MLflow run (tag and param); a sweep
file's `precision:` (global and per track) and `--precision` reach the trials, the flag over both."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient

from ssrl.train.precision import resolve_precision


def test_smoke_scarcity_records_each_trials_precision(smoke_runs):
    results = smoke_runs.results["scarcity"]
    trains = resolve_precision("auto", torch.device("cpu"))  # what 'auto' is on this CPU
    want = {"supervised": trains, "ssl_finetune": trains, "ssl_frozen": "fp32", "random_frozen": "fp32"}
    rows = [dict(r, track=c["track"]) for c in results["cells"] for r in c["per_seed"]]
    assert rows and all(r["precision"] == want[r["track"]] for r in rows)
    assert results["precision"] == {"requested": "auto", "used": sorted(set(want.values()))}

    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_runs.out}/mlflow.db")
    exp = client.get_experiment_by_name("ssrl-scarcity")
    runs = client.search_runs([exp.experiment_id], f"tags.ssrl_run = '{results['run_id']}' and tags.stage = 'eval'",
                              max_results=1000)
    assert len(runs) == len(rows)
    for run in runs:
        track = run.data.tags["track"]
        assert run.data.tags["precision"] == run.data.params["precision_used"] == want[track]
        assert run.data.params.get("precision", "auto") == "auto"  # the setting (a param once a sweep sets it)


def _trial_precisions(launch, sweeps, *flags: str) -> dict[str, str]:
    """{track: the precision setting its eval trials get} for `launch.py --sweep scarcity --scale smoke *flags`."""
    from ssrl.tune import stages
    from ssrl.tune.options import LaunchOptions, specs

    opts = LaunchOptions(**vars(launch.parse_args(["--sweep", "scarcity", "--scale", "smoke", "--sweeps-dir",
                                                   str(sweeps), *flags])))
    spec, _ = specs(opts, "smoke")
    ctx = stages.Context(storage="unused", run_id="r", cpus=1, gpus=0, max_concurrent=None, resume=False,
                         dataset=SimpleNamespace(name="synthetic", fingerprint="f" * 64, root="unused", sampling_rate=100))
    return {c.track: stages.cell_config(ctx, spec, c, {}, "eval").get("precision", "auto") for c in spec.cells}


def test_the_flag_beats_the_sweep_files_precision_and_its_per_track_override(launch, edited_sweeps):
    assert set(_trial_precisions(launch, edited_sweeps()).values()) == {"auto"}  # the files as committed
    sweeps = edited_sweeps(scarcity={"scales.smoke.train.precision": "bf16",
                                     "track_train.supervised": {"precision": "fp32"}})
    assert _trial_precisions(launch, sweeps) == {"supervised": "fp32", "ssl_finetune": "bf16", "ssl_frozen": "bf16",
                                                 "random_frozen": "bf16"}
    for flag in ("auto", "fp32", "bf16"):
        got = _trial_precisions(launch, sweeps, "--precision", flag)
        assert set(got) == {"supervised", "ssl_finetune", "ssl_frozen", "random_frozen"}
        assert set(got.values()) == {flag}, (flag, got)


@pytest.mark.parametrize(("file", "flag", "want"), [("bf16", None, "bf16"), ("bf16", "fp32", "fp32")])
def test_the_precision_asked_for_is_the_one_trials_run_at(launch, edited_sweeps, ray_session, synth_root, cache_dir,
                                                          tmp_path, file, flag, want):
    """A one-trial smoke sweep: the sweep file's precision reaches the trial; --precision beats it and the track's
    own setting. (On this machine's CPU `auto` is fp32 and bf16 runs emulated, so a bf16 row is the file's doing.)"""
    from ssrl.tune import runner

    sweeps = edited_sweeps(scarcity={"scales.smoke.tracks": ["supervised"], "scales.smoke.fractions": [1.0],
                                     "scales.smoke.seeds": [42], "scales.smoke.train.epochs": 1,
                                     "scales.smoke.train.precision": file, "track_train": {"supervised": {"precision": file}}})
    argv = ["--sweep", "scarcity", "--scale", "smoke", "--data-root", str(synth_root), "--out", str(tmp_path / "out"),
            "--storage", ray_session.storage + f"/{tmp_path.name}", "--sweeps-dir", str(sweeps), "--max-concurrent", "1"]
    res = runner.run_sweep(runner.LaunchOptions(**vars(launch.parse_args(argv + (["--precision", flag] if flag else [])))))
    rows = json.loads((tmp_path / "out" / "scarcity" / "results.json").read_text())["cells"][0]["per_seed"]
    assert res["n_failed"] == 0 and [r["precision"] for r in rows] == [want]
    assert res["precision"] == {"requested": flag or file, "used": [want]}
