"""Fixtures of the data tests: a tiny synthetic tree to corrupt, and the real PTB-XL when PTBXL_ROOT is set."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """40 synthetic records at 100 and 500 Hz; small because wfdb reads ~30 ms per record."""
    from ssrl.data.synth import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("tiny") / "ptbxl", n_records=40, seed=3, sampling_rates=(100, 500))


@pytest.fixture(scope="session")
def tiny_cache(tiny_root: Path, tmp_path_factory) -> Path:
    """A cache folder holding the tiny tree's 100 Hz cache, built once per session."""
    from ssrl.data import open_ptbxl

    path = tmp_path_factory.mktemp("tiny-cache")
    open_ptbxl(tiny_root, cache_dir=path, workers=1)
    return path


@pytest.fixture
def tiny(tiny_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny tree that a test may corrupt (same mtimes: it hits tiny_cache)."""
    return Path(shutil.copytree(tiny_root, tmp_path / "ptbxl"))


def _edit_database(root: Path, **columns: dict[int, object]) -> None:
    """Overwrite cells of ptbxl_database.csv: edit_database(root, scp_codes={ecg_id: value})."""
    path = root / "ptbxl_database.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    ids = df["ecg_id"].astype(int)
    for column, cells in columns.items():
        for ecg_id, value in cells.items():
            df.loc[ids == ecg_id, column] = str(value)
    df.to_csv(path, index=False)


@pytest.fixture
def edit_database():
    """A function that overwrites cells of a tree's ptbxl_database.csv, keyed by ecg_id."""
    return _edit_database


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The real PTB-XL (possibly a partial unpack) named by $PTBXL_ROOT; skips when unset."""
    root = os.environ.get("PTBXL_ROOT")
    if not root:
        pytest.skip("PTBXL_ROOT is not set")
    return Path(root)


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    """$SSRL_CACHE_DIR when set (CI can keep it between runs), else a session temp folder."""
    env = os.environ.get("SSRL_CACHE_DIR")
    return Path(env) if env else tmp_path_factory.mktemp("real-cache")
