"""cluster.yaml passes Ray's own autoscaler validation, offline, and stays free of secrets."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
SECRET_WORDS = ("aws_access_key_id", "aws_secret_access_key", "password", "token", "secret",
                "ssh_private_key", "keyname")
HYPERPARAMETERS = ("learning_rate", "--lr", "weight_decay", "batch_size", "epochs", "temperature")


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _walk(node, path=()):
    """Yields (path, key-or-None, value) for every mapping key and scalar in a YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, str(k), v
            yield from _walk(v, (*path, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, (*path, str(i)))
    else:
        yield path, None, node


def test_ray_autoscaler_validation_offline(raw):
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(raw))  # merges aws defaults; no AWS call
    validate_config(prepared)  # ray-schema.json + Ray's cross-field checks
    assert prepared["provider"]["type"] == "aws" and prepared["provider"]["region"]
    assert prepared["provider"]["availability_zone"]
    assert prepared["auth"] == {"ssh_user": "ubuntu"}


def test_node_types(raw):
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] > 0
    gpu = [t for name, t in types.items() if name != raw["head_node_type"] and t["resources"].get("GPU")]
    assert gpu and all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in gpu)
    for t in types.values():
        # Ray's built-in default AMI is an old Ubuntu 18.04 image: every type names its own.
        assert t["node_config"]["ImageId"]


def test_no_secrets(raw):
    text = CLUSTER_YAML.read_text().lower()
    for word in SECRET_WORDS:
        assert word not in text, f"{word!r} appears in cluster.yaml"
    assert not re.search(r"akia[0-9a-z]{16}", text)  # an AWS access key id
    for _, key, _ in _walk(raw):
        assert key is None or key.lower() not in SECRET_WORDS


def test_services_bind_to_localhost_only(raw):
    commands = [c for k in ("head_start_ray_commands", "worker_start_ray_commands", "setup_commands",
                            "head_setup_commands") for c in raw.get(k) or []]
    ray_start = [c for c in raw["head_start_ray_commands"] if "ray start --head" in c]
    assert len(ray_start) == 1 and "--dashboard-host=127.0.0.1" in ray_start[0]
    mlflow = [c for c in raw["head_start_ray_commands"] if "mlflow" in c and " server " in c]
    assert len(mlflow) == 1 and "--host 127.0.0.1" in mlflow[0]
    assert not any("0.0.0.0" in c for c in commands)


def test_project_and_data_setup(raw):
    assert "." in raw["file_mounts"].values()
    setup = " ".join(raw["setup_commands"])
    assert "pip install" in setup and "-e" in setup
    assert "~/data/PTB-XL" in setup and "ptb-xl" in setup and "1.0.3" in setup


def test_no_hyperparameters():
    text = CLUSTER_YAML.read_text().lower()
    for word in HYPERPARAMETERS:
        assert word not in text, f"hyperparameter-like {word!r} in cluster.yaml (belongs in sweeps/)"
