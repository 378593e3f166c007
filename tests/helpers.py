"""Helpers that several test modules share; tests/conftest.py puts tests/ on sys.path, so `from helpers import`."""

from __future__ import annotations

import importlib.util
import json
import zlib
from pathlib import Path
from types import ModuleType

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def launch_module() -> ModuleType:
    """launch.py imported from the checkout (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("ssrl_launch", REPO / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stage_runs(client, results: dict, stage: str) -> list:
    """The MLflow runs of one stage ('parent', 'eval', 'search', ...) of the sweep run that wrote results."""
    exp = client.get_experiment_by_name(f"ssrl-{results['sweep']}")
    assert exp is not None, f"no MLflow experiment for {results['sweep']}"
    return client.search_runs([exp.experiment_id], max_results=1000,
                              filter_string=f"tags.ssrl_run = '{results['run_id']}' and tags.stage = '{stage}'")


def launch_smoke_scarcity(sweeps: Path, synth_root: Path, cache_dir: Path, out: Path):
    """`launch.py --sweep scarcity --scale smoke` as a user runs it: a subprocess with its own Ray (in a short
    temporary dir: socket paths have a length limit), no terminal; returns the CompletedProcess."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    ray_tmp = Path(tempfile.mkdtemp(prefix="ssrl-ray-"))
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "SSRL_CACHE_DIR": str(cache_dir)}
    env.pop("RAY_ADDRESS", None)
    try:
        return subprocess.run([sys.executable, "launch.py", "--sweep", "scarcity", "--scale", "smoke", "--data-root",
                               str(synth_root), "--out", str(out), "--sweeps-dir", str(sweeps)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


# A small fewshot benchmark's results and probabilities (tests/report): 40 test records, 5 rhythm classes.
ECG_IDS = np.arange(100, 140)
Y = np.random.default_rng(0).integers(0, 5, len(ECG_IDS))
CLASSES = ["SR", "AFIB", "STACH", "SARRH", "SBRAD"]


def fewshot_run(tmp_path: Path, name: str, tracks: list[tuple[str, int]], shuffle: int = 0, y=Y,
                method: str | None = None, pretraining: dict | None = None, seeds=(42, 52),
                rerun_of: str | None = None) -> tuple[Path, Path]:
    """A fewshot results file (tmp_path/NAME.json) and its predictions file (NAME.npz) for the given (track, N)
    conditions and seeds; `ssl` cells start from `method`'s encoder. A trial's probabilities follow its run's
    name, or `rerun_of`'s (a deterministic re-run scores every trial it shares with that run the same)."""
    from ssrl.kinds import kind_of
    from ssrl.report.rescore import _score, write_predictions

    salt = zlib.crc32((rerun_of or name).encode())
    order = np.random.default_rng(shuffle).permutation(len(ECG_IDS)) if shuffle else np.arange(len(ECG_IDS))
    trials, rows = [], []
    for track, n in tracks:
        for seed in seeds:
            prob = np.random.default_rng([salt, zlib.crc32(track.encode()), n, seed]).dirichlet(np.ones(5), len(ECG_IDS))
            row = {"track": track, "method": method if track == "ssl" else None, "n_labelled": n, "n_labelled_used": n, "seed": seed, "status": "ok",
                   "bn_stats": "precise" if track in ("scratch", "ssl") else None,
                   "collapsed": False if track in ("scratch", "ssl") else None, "test_macro_f1": _score("test_macro_f1", y, prob)}
            rows.append(row)
            trials.append({**row, "ecg_id": ECG_IDS[order], "y": y[order], "prob": prob[order], "classes": CLASSES})
    cells = kind_of("fewshot").cells(rows, "test_macro_f1", [method] if method else [])
    res = {"sweep": "fewshot", "scale": "cpu-full", "run_id": name, "metric": "test_macro_f1", "cells": cells,
           "dataset": {"name": "ptbxl", "sampling_rate": 100, "task": "rhythm5", "fingerprint": name},
           "n_runs": len(rows), "n_failed": 0, "n_skipped": 0, "precision": {"requested": "auto", "used": ["fp32"]},
           "baseline_track": "scratch", "trivial_baseline": {"name": "always SR", "class": "SR", "value": 0.18}}
    if pretraining:
        res["pretraining"] = pretraining
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(res))
    return path, write_predictions(tmp_path / f"{name}.npz", "test_macro_f1", trials)
