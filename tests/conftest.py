"""Shared fixtures: one local Ray for the whole test session, with everything under a temp dir.

End-to-end tests carry the `e2e` marker (`make test-fast` leaves them out): every test that uses one of
E2E_FIXTURES gets it here; tests that start Ray, a Ray head or a whole sweep in a subprocess are marked
where they are written (`@pytest.mark.e2e`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import launch_module

# Set before Ray/MLflow are imported anywhere: no telemetry, no auth tokens, no network.
for _key, _value in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
                     "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_DEDUP_LOGS": "0"}.items():
    os.environ.setdefault(_key, _value)


E2E_FIXTURES = frozenset({"ray_session", "smoke_runs"})  # a local Ray; the three smoke sweeps on it


def pytest_collection_modifyitems(config, items):
    """Mark every test that needs the session's Ray (directly or through another fixture) as e2e."""
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def ray_session(request, tmp_path_factory):
    """A local Ray (2 CPUs) started once; yields .storage (Tune storage_path) and .tmp.

    Ray's socket paths must stay under 108 characters, so its temp dir is a short directory
    under the system temp dir (removed afterwards) rather than pytest's long tmp_path.
    Test modules are pickled by value, so trainables defined in a test file run on workers
    (which cannot import pytest's rootdir-relative module names).
    """
    import ray
    from ray import cloudpickle

    for module in {getattr(item, "module", None) for item in request.session.items} - {None}:
        cloudpickle.register_pickle_by_value(module)

    ray_tmp = Path(tempfile.mkdtemp(prefix="ssrl-ray-"))
    storage = tmp_path_factory.mktemp("tune-storage")
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = str(ray_tmp)
    os.environ.pop("RAY_ADDRESS", None)  # never attach to someone else's cluster
    for attempt in range(3):  # Ray waits a hard-coded 30 s for its raylet; a loaded 2-core runner can miss that
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=str(ray_tmp),
                     log_to_driver=False, configure_logging=False)
            break
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception for a slow start
            ray.shutdown()
            if "timed out during startup" not in str(e) or attempt == 2:
                raise
    try:
        yield SimpleNamespace(storage=str(storage), tmp=ray_tmp)
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def launch():
    """launch.py imported from the checkout (a script, not part of the package)."""
    return launch_module()


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A tiny synthetic PTB-XL (400 records, real WFDB files) written once per test session."""
    from ssrl.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("synth") / "ptbxl"
    write_synthetic(root, n_records=400, seed=1)
    return root


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """A signal cache folder for the whole session (tests never touch ~/.cache)."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["SSRL_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests share two cores with Ray workers; one intra-op thread each keeps them from thrashing."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smoke_runs(ray_session, synth_root, cache_dir, tmp_path_factory):
    """The three smoke sweeps run once, end to end on local Ray, into one out dir (sqlite MLflow)."""
    from ssrl.tune.runner import LaunchOptions, run_sweep

    out = tmp_path_factory.mktemp("runs")
    results = {}
    for sweep in ("pretrain", "scarcity", "fewshot"):
        opts = LaunchOptions(sweep=sweep, scale="smoke", data_root=str(synth_root), out=str(out),
                             storage=ray_session.storage + f"/{out.name}", max_concurrent=2)
        results[sweep] = run_sweep(opts)
    return SimpleNamespace(out=out, results=results, storage=ray_session.storage + f"/{out.name}")


@pytest.fixture
def edited_sweeps(tmp_path):
    """edited_sweeps(scarcity={"scales.smoke.seeds": [1]}): a copy of sweeps/ with dotted keys replaced."""
    import yaml

    dest = tmp_path / "sweeps"

    def write(**edits: dict) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        for src in (Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"):
            raw = yaml.safe_load(src.read_text())
            for dotted, value in edits.get(src.stem, {}).items():
                *parents, last = dotted.split(".")
                node = raw
                for key in parents:
                    node = node.setdefault(key, {})
                node[last] = value
            (dest / src.name).write_text(yaml.safe_dump(raw))
        return dest

    return write
