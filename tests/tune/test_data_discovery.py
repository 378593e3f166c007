"""Which PTB-XL a sweep runs on when --data-root is not given: $SSRL_DATA_ROOT, else ./data/PTB-XL, else the
built-in synthetic one; and the scale that follows (paper on real data, demo on synthetic). Checked through
`launch.py --dry-run` as a user runs it from a folder of their own: it prints the plan, starts and writes nothing."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def home(monkeypatch, tmp_path):
    """A working directory of the user's with nothing in it, no $SSRL_DATA_ROOT, a cache dir that must stay absent."""
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("--dry-run started Ray")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.delenv("SSRL_DATA_ROOT", raising=False)
    monkeypatch.setenv("SSRL_CACHE_DIR", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _plan(launch, capsys, *argv: str) -> tuple[str, str]:
    """(scale line, data line) of `launch.py --sweep scarcity --dry-run *argv`, which must exit 0."""
    assert launch.main(["--sweep", "scarcity", "--dry-run", *argv]) == 0
    out = capsys.readouterr().out
    head = out.splitlines()[0]
    (data,) = re.findall(r"^data +(.*)$", out, re.M)
    return head, data


def test_ssrl_data_root_is_used_and_means_the_paper_scale(launch, capsys, home, monkeypatch, synth_root):
    monkeypatch.setenv("SSRL_DATA_ROOT", str(synth_root))
    before = _tree(home.parent)
    head, data = _plan(launch, capsys)
    assert "scale paper (the default on real PTB-XL)" in head
    assert data == f"{synth_root.resolve()} ($SSRL_DATA_ROOT; 400 records at 100 Hz)"
    assert _tree(home.parent) == before and not (home.parent / "cache").exists()


def test_data_ptbxl_in_the_working_directory_is_found(launch, capsys, home, synth_root):
    shutil.copytree(synth_root, home / "data" / "PTB-XL")
    before = _tree(home.parent)
    head, data = _plan(launch, capsys)
    assert "scale paper (the default on real PTB-XL)" in head
    assert data == "data/PTB-XL (./data/PTB-XL; 400 records at 100 Hz)"  # shown relative to where the user is
    assert _tree(home.parent) == before


def test_the_environment_beats_the_working_directory_and_the_flag_beats_both(launch, capsys, home, monkeypatch,
                                                                              synth_root, tmp_path):
    shutil.copytree(synth_root, home / "data" / "PTB-XL")
    other = tmp_path / "other"
    shutil.copytree(synth_root, other)
    monkeypatch.setenv("SSRL_DATA_ROOT", str(other))
    assert _plan(launch, capsys)[1] == f"{other.resolve()} ($SSRL_DATA_ROOT; 400 records at 100 Hz)"
    head, data = _plan(launch, capsys, "--data-root", str(synth_root), "--scale", "smoke")
    assert "scale smoke (--scale)" in head and data == f"{synth_root.resolve()} (--data-root; 400 records at 100 Hz)"


def test_nothing_found_means_the_synthetic_data_at_demo_scale(launch, capsys, home):
    """A ./data/PTB-XL without its database CSV is not a PTB-XL: the synthetic default, written on the first run."""
    (home / "data" / "PTB-XL").mkdir(parents=True)
    before = _tree(home.parent)
    head, data = _plan(launch, capsys)
    assert "scale demo (the default on synthetic data: no PTB-XL found)" in head
    assert "built-in synthetic PTB-XL (no real PTB-XL found); 2000 records written on the first run" in data
    assert _tree(home.parent) == before and not (home.parent / "cache").exists()


def test_a_data_root_in_the_environment_that_is_not_ptbxl_is_an_error_not_the_synthetic_data(launch, capsys, home,
                                                                                               monkeypatch, tmp_path):
    monkeypatch.setenv("SSRL_DATA_ROOT", str(tmp_path / "absent"))
    assert launch.main(["--sweep", "scarcity", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(tmp_path / "absent") in err[0], err
    assert not (home.parent / "cache").exists()


def test_a_relative_cache_dir_is_made_absolute_before_ray_starts(launch, monkeypatch, synth_root, tmp_path):
    """Ray runs every trial in a working folder of its own, so a relative $SSRL_CACHE_DIR handed to its workers
    named a new, empty cache in each trial (each demo trial rebuilt the signal cache there). The driver makes it
    absolute before Ray starts, and Ray's workers inherit that."""
    import ray

    class Started(Exception):
        pass

    seen = {}

    def init(*args, **kwargs):
        seen["cache"] = os.environ["SSRL_CACHE_DIR"]
        raise Started

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SSRL_CACHE_DIR", "rel/cache")
    with pytest.raises(Started):
        launch.main(["--sweep", "scarcity", "--scale", "smoke", "--data-root", str(synth_root), "--out", "runs"])
    assert seen["cache"] == str(tmp_path / "rel" / "cache")
    assert (tmp_path / "rel" / "cache").is_dir()  # the driver's own cache went to the same folder
