"""One atomic writer for every kind of file: a write cut off part-way leaves the old file intact and no debris."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ssrl.atomic import atomic_open


class Cut(RuntimeError):
    """The write stops here (a full disk, a kill)."""


def _cut(f, *args, **kwargs) -> None:
    """Write part of a file into f, then fail."""
    target = f if hasattr(f, "write") else args[0]
    target.write(b"part of a file" if "b" in getattr(target, "mode", "wb") else "part of a file")
    raise Cut


def _intact(path: Path, old: bytes) -> None:
    assert path.read_bytes() == old
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left behind


@pytest.fixture
def old(tmp_path):
    def make(name: str) -> tuple[Path, bytes]:
        path = tmp_path / name
        path.write_bytes(b"the old file")
        return path, b"the old file"
    return make


def test_atomic_open_replaces_whole_files_only(old):
    path, before = old("a.txt")
    with pytest.raises(Cut), atomic_open(path, "w") as f:
        f.write("half")
        raise Cut
    _intact(path, before)
    with atomic_open(path, "w") as f:
        f.write("new")
    assert path.read_text() == "new"
    with pytest.raises(ValueError, match="whole files"), atomic_open(path, "a"):
        pass


def test_results_json_text_and_bytes(old, monkeypatch):
    import ssrl.report.io as io

    path, before = old("results.json")
    monkeypatch.setattr(io.json, "dump", lambda obj, f, **kw: _cut(f))
    with pytest.raises(Cut):
        io.write_json_atomic(path, {"a": 1})
    _intact(path, before)
    monkeypatch.undo()
    io.write_json_atomic(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}


def test_checkpoints_and_loop_state(old, monkeypatch):
    import ssrl.train.loop as loop

    path, before = old("encoder_best.pt")
    monkeypatch.setattr(loop.torch, "save", lambda obj, f: _cut(f))
    with pytest.raises(Cut):
        loop.atomic_torch_save({"w": 1}, path)
    _intact(path, before)


def test_plots(old, monkeypatch):
    import matplotlib.pyplot as plt

    from ssrl.report import plots

    path, before = old("fewshot.png")
    fig = plt.figure()
    monkeypatch.setattr(fig, "savefig", lambda f, **kw: _cut(f))
    with pytest.raises(Cut):
        plots._save(fig, path)
    _intact(path, before)
    assert fig.number not in plt.get_fignums()  # closed even when the save failed


def test_predictions(old, monkeypatch, ft_cfg_data):
    import ssrl.train.common as common

    cfg, labels, data = ft_cfg_data
    path, before = old("predictions.npz")
    monkeypatch.setattr(common.np, "savez_compressed", lambda f, **kw: _cut(f))
    with pytest.raises(Cut):
        common.save_predictions(path.parent, cfg, labels, data, np.zeros((len(labels.split("test").rows), 5)))
    _intact(path, before)


def test_heart_rate_feature_cache(synth_root, tmp_path, monkeypatch):
    import ssrl.data.rpeaks as rpeaks
    from ssrl.data import open_ptbxl

    data = open_ptbxl(synth_root, 100, tmp_path)
    rpeaks.feature_table(data, np.array([0]))
    (path,) = tmp_path.glob("*.rr-*.npy")
    before = path.read_bytes()
    monkeypatch.setattr(rpeaks.np, "save", lambda f, arr: _cut(f))
    with pytest.raises(Cut):
        rpeaks.feature_table(data, np.array([1]))
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


@pytest.fixture
def ft_cfg_data(synth_root, cache_dir):
    from ssrl.config import FinetuneConfig
    from ssrl.data import open_ptbxl, task_labels

    cfg = FinetuneConfig(data_root=str(synth_root), cache_dir=str(cache_dir), task="rhythm5", track="scratch")
    data = open_ptbxl(synth_root, 100, cache_dir)
    return cfg, task_labels(data, "rhythm5"), data
