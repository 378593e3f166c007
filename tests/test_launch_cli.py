"""Bad input to launch.py: one 'error:' line, exit code 2, found before Ray starts, nothing in --out touched."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
OLD = b'{"sweep": "scarcity", "kept": true}\n'


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch):
    """Every check here must fail before Ray starts: starting it is a test failure."""
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("ray.init was called: the bad input was not caught before Ray")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # even when the session's Ray is up
    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture
def out(tmp_path):
    """An out dir holding an earlier run's results for every sweep."""
    root = tmp_path / "runs"
    for sweep in ("pretrain", "scarcity", "fewshot"):
        (root / sweep).mkdir(parents=True)
        (root / sweep / "results.json").write_bytes(OLD)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An MLflow store outside --out, created once (creating a sqlite store takes seconds)."""
    from ssrl.tune.tracking import connect

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    connect(uri)
    return uri


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    """A 60-record synthetic PTB-XL that the damage tests copy and break."""
    from ssrl.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("small") / "ptbxl"
    write_synthetic(root, n_records=60, seed=3)
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(launch, capsys, out: Path, argv: list[str], expect: str) -> str:
    """Run launch.main in-process; check exit 2, one 'error:' line containing expect, out untouched."""
    before = _tree(out) if out.is_dir() else {}
    try:
        rc = launch.main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expect in lines[0], lines[0]
    assert (_tree(out) if out.is_dir() else {}) == before, "a failed start changed files in --out"
    return lines[0]


@pytest.fixture
def smoke(store):
    """The argv of a smoke sweep, tracked in the module's store unless --tracking-uri is passed."""

    def argv(sweep: str, out: Path, data: Path, *extra: str) -> list[str]:
        tracking = [] if "--tracking-uri" in extra else ["--tracking-uri", store]
        return ["--sweep", sweep, "--scale", "smoke", "--data-root", str(data), "--out", str(out), *tracking, *extra]

    return argv


# --- command line and sweep files ---------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "expect"), [
    (["--sweep", "nope"], "invalid choice: 'nope'"),
    (["--sweep", "scarcity", "--scale", "huge"], "invalid choice: 'huge'"),
    (["--sweep", "scarcity", "--sampling-rate", "250"], "invalid choice: 250"),
    ([], "required: --sweep"),
])
def test_bad_arguments(launch, capsys, out, argv, expect):
    refused(launch, capsys, out, [*argv, "--out", str(out)], expect)


@pytest.mark.parametrize(("edits", "expect"), [
    ({"scales.smoke.epochs": 3}, "unknown key(s) epochs in scales.smoke"),
    ({"scales.smoke.train.learning_rate": 0.1}, "unknown setting(s) learning_rate"),
    ({"scales.smoke.fractions": [0.0, 1.0]}, "fraction 0.0 is out of range"),
    ({"scales.smoke.fractions": [0.5, 1.5]}, "fraction 1.5 is out of range"),
    ({"scales.smoke.seeds": [42, 42]}, "without repeats"),
    ({"scales.smoke.resources.max_failures": -1}, "max_failures=-1 must be >= 0"),
    ({"scales.smoke.tracks": ["supervised", "ssl_finetun"]}, "track 'ssl_finetun' is unknown"),
    ({"scales.smoke.resources.cpus_per_trial": "two"}, "cpus_per_trial='two' must be a number"),
    ({"scales.smoke.resources.checkpoint_every": 2.5}, "checkpoint_every=2.5 must be a whole number"),
    ({"scales.smoke.search.samples_per_group": True}, "samples_per_group=True must be a whole number"),
])
def test_bad_sweep_file(edited_sweeps, launch, capsys, out, synth_root, edits, expect, smoke):
    sweeps = edited_sweeps(scarcity=edits)
    line = refused(launch, capsys, out, smoke("scarcity", out, synth_root, "--sweeps-dir", str(sweeps)), expect)
    assert "scarcity.yaml" in line


def test_missing_sweeps_dir(launch, capsys, out, synth_root, tmp_path, smoke):
    refused(launch, capsys, out, smoke("scarcity", out, synth_root, "--sweeps-dir", str(tmp_path / "nope")),
            "cannot read sweep file")


def test_n_per_class_larger_than_a_class_holds(edited_sweeps, launch, capsys, out, synth_root, cache_dir, smoke):
    sweeps = edited_sweeps(fewshot={"scales.smoke.conditions": [
        {"track": "scratch", "n": 10}, {"track": "scratch", "n": 5000}]})
    line = refused(launch, capsys, out, smoke("fewshot", out, synth_root, "--sweeps-dir", str(sweeps)),
                   "scratch@N5000 needs 1000 train records per class")
    assert "AFIB has" in line and "lower n" in line


# --- a missing or partial PTB-XL ----------------------------------------------------------------------


def _first_record(root: Path) -> Path:
    db = pd.read_csv(root / "ptbxl_database.csv", index_col="ecg_id").sort_index()
    return root / db["filename_lr"].iloc[0]


def _drop_column(root: Path) -> None:
    db = pd.read_csv(root / "ptbxl_database.csv")
    db.drop(columns="strat_fold").to_csv(root / "ptbxl_database.csv", index=False)


def _truncate(root: Path) -> None:
    dat = _first_record(root).with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[: dat.stat().st_size // 2])


DAMAGE = {
    "missing_root": (lambda root: shutil.rmtree(root), "PTB-XL root not found"),
    "missing_csv": (lambda root: (root / "scp_statements.csv").unlink(), "scp_statements.csv: missing"),
    "missing_column": (_drop_column, "missing column 'strat_fold'"),
    "missing_record": (lambda root: _first_record(root).with_suffix(".dat").unlink(),
                       "listed in ptbxl_database.csv but missing"),
    "truncated_record": (_truncate, "truncated"),
    "bad_header": (lambda root: _first_record(root).with_suffix(".hea").write_text("garbage\x00 header\n"),
                   "header does not parse"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_missing_or_partial_ptbxl(launch, capsys, out, small_root, cache_dir, tmp_path, damage, smoke):
    root = tmp_path / "ptbxl"
    shutil.copytree(small_root, root)
    breaking, expect = DAMAGE[damage]
    breaking(root)
    refused(launch, capsys, out, smoke("scarcity", out, root), expect)


def test_sampling_rate_without_records(launch, capsys, out, small_root, smoke):
    refused(launch, capsys, out, smoke("scarcity", out, small_root, "--sampling-rate", "500"),
            "no records for sampling rate 500")


# --- checkpoints, out dir, tracking, resume -----------------------------------------------------------


def test_sweep_that_finetunes_another_encoder_than_it_pretrains(edited_sweeps, launch, capsys, out, synth_root,
                                                                 cache_dir, tmp_path, smoke):
    sweeps = edited_sweeps(scarcity={"scales.smoke.train.encoder_width": 16})
    refused(launch, capsys, out, smoke("scarcity", out, synth_root, "--sweeps-dir", str(sweeps)),
            "fine-tunes encoder 'cnn6' width 16, but")


def _published_path(storage: Path, data: Path) -> Path:
    """Where the smoke scarcity sweep looks for its finished SimCLR pretraining."""
    from ssrl.tune import stages
    from ssrl.tune.dataset import open_dataset
    from ssrl.tune.spec import load_sweep

    pre = load_sweep("pretrain", "smoke")
    dataset = open_dataset(data, 100)
    path = Path(stages.pretrained_uri(str(storage), stages.pretrain_config(pre, "simclr", pre.seeds[0], dataset),
                                      dataset.fingerprint))
    path.mkdir(parents=True)
    (path / "DONE").write_text("ok\n")
    return path


def test_published_checkpoint_of_another_encoder(launch, capsys, out, synth_root, cache_dir, tmp_path, smoke):
    from ssrl.models import build_encoder
    from ssrl.train import HANDED_ON, save_encoder

    storage = tmp_path / "storage"
    path = _published_path(storage, synth_root)
    save_encoder(path / HANDED_ON, build_encoder("cnn6", width=16), "cnn6", {"width": 16}, {})
    refused(launch, capsys, out, smoke("scarcity", out, synth_root, "--storage", str(storage)),
            "holds encoder 'cnn6' {'width': 16}, but pretrain.yaml pretrains 'cnn6' {'width': 8}")


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_published_checkpoint_that_would_run_code_is_refused(launch, capsys, out, synth_root, cache_dir, tmp_path,
                                                             smoke):
    """The sweep-level twin of tests/train/test_finetune.py::test_pickle_that_runs_code_is_refused."""
    import torch

    from ssrl.train import HANDED_ON

    storage, marker = tmp_path / "storage", tmp_path / "pwned"
    path = _published_path(storage, synth_root)
    torch.save({"format": "ssrl-encoder/1", "payload": _RunsCode(marker)}, path / HANDED_ON, pickle_protocol=2)
    with pytest.raises(pickle.UnpicklingError):  # what weights_only=True stands between
        torch.load(path / HANDED_ON, weights_only=True)
    refused(launch, capsys, out, smoke("scarcity", out, synth_root, "--storage", str(storage)),
            "refused, not a weights-only ssrl checkpoint")
    assert not marker.exists()


def test_unwritable_out_dir(launch, capsys, synth_root, tmp_path, smoke):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    refused(launch, capsys, blocker, smoke("scarcity", blocker / "runs", synth_root), "is not writable")
    assert blocker.read_text() == "not a folder"


def test_unreachable_tracking_server(launch, capsys, out, synth_root, cache_dir, smoke):
    """A store nobody listens on: connect() gives up in seconds, launch says so in one line without the password."""
    from ssrl.tune.tracking import TrackingError, connect

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://ann:pw-9931@127.0.0.1:{port}"
    t0 = time.monotonic()
    with pytest.raises(TrackingError, match="cannot be reached"):
        connect(uri)
    assert time.monotonic() - t0 < 5, "an unreachable store must fail fast, not after MLflow's long retries"
    line = refused(launch, capsys, out, smoke("fewshot", out, synth_root, "--tracking-uri", uri), "cannot be reached")
    assert line.startswith(f"error: tracking store http://***@127.0.0.1:{port}") and "pw-9931" not in line


def test_resume_with_nothing_to_resume(launch, capsys, out, synth_root, smoke):
    refused(launch, capsys, out, smoke("scarcity", out, synth_root, "--resume"), "nothing to resume")


def test_resume_of_an_unreadable_state(launch, capsys, out, synth_root, smoke):
    (out / "scarcity" / "state.json").write_text('{"run_id": "2026')
    refused(launch, capsys, out, smoke("scarcity", out, synth_root, "--resume"), "state.json is unreadable")


@pytest.mark.parametrize(("state", "expect"), [({"scale": "demo"}, "holds a demo run; pass --scale demo"),
                                               ({"fingerprint": "0123456789abcdef"}, "was run on other data")])
def test_resume_of_another_scale_or_other_data(launch, capsys, out, synth_root, cache_dir, smoke, state, expect):
    (out / "scarcity" / "state.json").write_text(json.dumps({"run_id": "20260101-000000", "stages": {}, **state}))
    refused(launch, capsys, out, smoke("scarcity", out, synth_root, "--resume"), expect)


def test_unreachable_ray_cluster(launch, capsys, out, synth_root, cache_dir, smoke, monkeypatch):
    import ray

    def no_cluster(**kwargs):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_cluster)
    refused(launch, capsys, out, smoke("fewshot", out, synth_root, "--address", "10.0.0.1:6379"),
            "cannot reach the Ray cluster at 10.0.0.1:6379")


def test_interrupt_says_how_to_continue(launch, capsys, out, monkeypatch):
    from ssrl.tune import runner

    def interrupted(opts):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_sweep", interrupted)
    assert launch.main(["--sweep", "scarcity", "--out", str(out)]) == 130
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "error: interrupted; run the same command with --resume to continue"


# --- end to end: a real process prints one line and no traceback --------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["argument", "data"])
def test_no_traceback_end_to_end(out, small_root, tmp_path, case, smoke):
    if case == "argument":
        argv = ["--sweep", "scarcity", "--scale", "huge", "--out", str(out)]
    else:
        root = tmp_path / "ptbxl"
        shutil.copytree(small_root, root)
        (root / "ptbxl_database.csv").unlink()
        argv = smoke("scarcity", out, root)
    before = _tree(out)
    proc = subprocess.run([sys.executable, "launch.py", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert _tree(out) == before


# --- servers the project starts bind to 127.0.0.1 -------------------------------------------------------


def test_local_ray_binds_to_localhost(monkeypatch):
    import ray

    from ssrl.tune import runner

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    runner._ray_init(None)
    assert seen["include_dashboard"] is False and seen["dashboard_host"] == "127.0.0.1"
