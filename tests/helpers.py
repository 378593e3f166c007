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
