"""The core (data, models, ssl, augment, train, errors) imports without Ray, MLflow and Optuna.

GPU machines lent for a short check have torch but not these until the offline bundle is installed
(docs/RESULTS.md, GPU); bench.gpu's data, checks and throughput stages run on the core alone, and its
sweep stage runs launch.py in a child process, so an import of one of them from the core or from the
bench's driver is a regression.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ("ssrl.data", "ssrl.models", "ssrl.ssl", "ssrl.augment", "ssrl.train", "ssrl.errors", "ssrl.tune.spec",
        "ssrl.tune.options")
GPU_BENCH = ("bench.gpu", "bench.gpu_stages", "bench.gpu_sweep", "bench.gpu_checks", "bench.gpu_data")
ABSENT = ("ray", "mlflow", "optuna")


def _loaded_after_import(modules: tuple[str, ...]) -> list[str]:
    """Which of ABSENT a fresh interpreter holds after importing `modules`."""
    code = (f"import importlib, json, sys\nfor m in {list(modules)!r}: importlib.import_module(m)\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {list(ABSENT)!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_core_imports_without_ray_mlflow_optuna() -> None:
    assert _loaded_after_import(CORE) == []


def test_the_gpu_bench_driver_imports_without_ray_mlflow_optuna() -> None:
    assert _loaded_after_import(GPU_BENCH) == []


def test_user_errors_are_the_types_the_sweep_modules_raise() -> None:
    from ssrl.errors import USER_ERRORS, SweepError, TrackingError
    from ssrl.tune.spec import SweepError as SpecSweepError

    assert SpecSweepError is SweepError and SweepError in USER_ERRORS and TrackingError in USER_ERRORS


def test_tracking_reexports_the_light_tracking_error() -> None:
    pytest.importorskip("mlflow")
    pytest.importorskip("ray")
    from ssrl.errors import TrackingError
    from ssrl.tune.tracking import TrackingError as TrackingTrackingError

    assert TrackingTrackingError is TrackingError


def test_the_check_sees_an_import_of_ray() -> None:
    """The probe itself works: importing a module that pulls Ray in is reported."""
    pytest.importorskip("ray")
    assert "ray" in _loaded_after_import(("ray",))
