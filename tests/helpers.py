"""Helpers that several test modules share; tests/conftest.py puts tests/ on sys.path, so `from helpers import`."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

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
