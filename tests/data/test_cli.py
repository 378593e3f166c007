"""`python -m ssrl.data`: describe, subsets, synth, cache, and the one-line error contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ssrl.data import fraction_subset, read_ptbxl, task_labels
from ssrl.data.__main__ import main


def run_json(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    """Run the CLI in-process with --json and parse what it printed."""
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_describe_json(synth_root: Path, capsys: pytest.CaptureFixture) -> None:
    out = run_json(capsys, "describe", str(synth_root))
    assert list(out) == ["root", "sampling_rate", "n_records", "pretrain_pool", "tasks"]
    assert out["n_records"] == 400 and out["sampling_rate"] == 100
    data = read_ptbxl(synth_root)
    for task, classes in (("superdiagnostic", ["NORM", "MI", "STTC", "CD", "HYP"]),
                          ("rhythm5", ["SR", "AFIB", "STACH", "SARRH", "SBRAD"])):
        info = out["tasks"][task]
        assert info["classes"] == classes and list(info["splits"]) == ["train", "val", "test"]
        labels = task_labels(data, task)
        for split, got in info["splits"].items():
            part = labels.split(split)
            assert got == {"n": len(part), "per_class": part.per_class()}
            assert list(got["per_class"]) == classes


def test_describe_table(synth_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["describe", str(synth_root)]) == 0
    text = capsys.readouterr().out
    assert "400 records at 100 Hz" in text and "superdiagnostic" in text and "rhythm5" in text
    assert "SBRAD" in text and "HYP" in text and "test" in text


def test_subsets_json(synth_root: Path, capsys: pytest.CaptureFixture) -> None:
    out = run_json(capsys, "subsets", str(synth_root), "--fractions", "0.05", "1.0", "--seeds", "42", "52")
    train = task_labels(read_ptbxl(synth_root), "superdiagnostic").split("train")
    assert out["pool"]["n"] == len(train)
    assert [(r["fraction"], r["seed"]) for r in out["subsets"]] == [(0.05, 42), (0.05, 52), (1.0, 42), (1.0, 52)]
    for r in out["subsets"]:
        idx = fraction_subset(train.y, r["fraction"], r["seed"])
        assert r["n"] == len(idx)
        assert list(r["per_class"].values()) == train.y[idx].sum(0).astype(int).tolist()
    assert out["subsets"][-1]["per_class"] == out["pool"]["per_class"]


def test_synth_then_cache(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = run_json(capsys, "synth", str(tmp_path / "syn"), "--records", "12", "--seed", "5")
    assert out["n_records"] == 12 and (tmp_path / "syn" / "SYNTHETIC").exists()
    assert run_json(capsys, "describe", str(tmp_path / "syn"))["n_records"] == 12
    out = run_json(capsys, "cache", str(tmp_path / "syn"), "--cache-dir", str(tmp_path / "c"))
    assert out["shape"] == [12, 12, 1000] and Path(out["cache"]).exists()
    assert np.isfinite(out["std"]).all()


def test_data_error_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "ssrl.data", "describe", str(tmp_path / "absent")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("error: ") and str(tmp_path / "absent") in lines[0]


def test_bad_record_through_cli(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dat = tiny / "records100/00000/00002_lr.dat"
    dat.write_bytes(dat.read_bytes()[:100])
    assert main(["cache", str(tiny), "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(dat) in err[0] and "truncated" in err[0]
