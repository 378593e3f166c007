"""cluster.yaml and cluster-onprem.yaml pass Ray's own autoscaler validation, offline, and stay free of secrets."""

from __future__ import annotations

import copy
import ipaddress
import re
import shlex
from pathlib import Path

import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
ONPREM_YAML = CLUSTER_YAML.with_name("cluster-onprem.yaml")
SECRET_WORDS = ("aws_access_key_id", "aws_secret_access_key", "password", "token", "secret",
                "ssh_private_key", "keyname")
HYPERPARAMETERS = ("learning_rate", "--lr", "weight_decay", "batch_size", "epochs", "temperature")


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def onprem() -> dict:
    return yaml.safe_load(ONPREM_YAML.read_text())


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


@pytest.mark.parametrize(("edit", "error"), [
    (lambda r: r.update(head_node_type="nope"), "must be one of `available_node_types`"),
    (lambda r: r.update(max_worker=3), "'max_worker' was unexpected"),
    (lambda r: r["available_node_types"]["gpu_worker"].update(max_workers="8"), "is not of type 'integer'"),
])
def test_ray_validation_refuses_a_broken_copy(raw, edit, error):
    """The validation above is live: the same calls refuse a misspelt key, a wrong type, a dangling name."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    bad = copy.deepcopy(raw)
    edit(bad)
    with pytest.raises(Exception, match=re.escape(error)):
        validate_config(prepare_config(bad))


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


def _invocations(commands: list[str]) -> list[list[str]]:
    """The argv of every program a list of shell commands runs (split at ; && || |, shell-quoted)."""
    out = []
    for command in commands:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        argv: list[str] = []
        for token in [*lexer, ";"]:
            if token in (";", "&&", "||", "|", "&"):
                out += [argv] if argv else []
                argv = []
            else:
                argv.append(token)
    return out


def _options(argv: list[str]) -> dict[str, str | None]:
    """--key=value and --key value pairs (a flag followed by another option or nothing maps to None)."""
    opts = {}
    for i, arg in enumerate(argv):
        if arg.startswith("--"):
            key, eq, value = arg.partition("=")
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            opts[key] = value if eq else (nxt if nxt is not None and not nxt.startswith("-") else None)
    return opts


def _invoked(raw: dict, key: str, *program: str) -> list[dict[str, str | None]]:
    """Options of every invocation under raw[key] whose argv holds `program` (e.g. 'ray', 'start') in a row."""
    n = len(program)
    return [_options(argv) for argv in _invocations(raw.get(key) or [])
            if any(tuple(argv[i:i + n]) == program for i in range(len(argv)))]


def test_services_bind_to_localhost_only(raw):
    """Ray's dashboard and MLflow listen on 127.0.0.1 on the head; workers join the head's GCS port."""
    (head,) = _invoked(raw, "head_start_ray_commands", "ray", "start")
    assert "--head" in head and head["--dashboard-host"] == "127.0.0.1"
    (worker,) = _invoked(raw, "worker_start_ray_commands", "ray", "start")
    assert "--head" not in worker and worker["--address"] == f"$RAY_HEAD_IP:{head['--port']}"
    assert worker["--object-manager-port"] == head["--object-manager-port"]
    (mlflow,) = [_options(a) for a in _invocations(raw["head_start_ray_commands"])
                 if any(x.endswith("/mlflow") and y == "server" for x, y in zip(a, a[1:]))]
    assert mlflow["--host"] == "127.0.0.1" and mlflow["--port"] == "5000"  # `ray attach -p 5000` forwards it
    argvs = [a for k, v in raw.items() if k.endswith("_commands") for a in _invocations(v)]
    assert argvs and not any("0.0.0.0" in arg for a in argvs for arg in a)


def _home(path: str) -> str:
    """One spelling of a path under the home folder ($HOME/x and ~/x alike), no trailing slash."""
    return path.replace("$HOME", "~").rstrip("/")


def test_project_and_data_setup(raw):
    """This checkout is mounted where pip installs it from; PTB-XL 1.0.3 lands where SSRL_DATA_ROOT points."""
    from packaging.requirements import Requirement

    (mount,) = [remote for remote, local in raw["file_mounts"].items() if local == "."]
    argvs = _invocations(raw["setup_commands"])
    editable = [re.fullmatch(r"(.*?)(?:\[(.*)\])?", a[a.index("-e") + 1]).groups()
                for a in argvs if a[:1] == ["~/venv/bin/pip"] and "-e" in a]
    assert [_home(path) for path, _ in editable] == [_home(mount)]
    # the head runs `mlflow server`: the full mlflow of the ui extra, not the core's skinny client
    assert all("ui" in (extras or "").split(",") for _, extras in editable), editable
    # the Ray pinned on the nodes is one the project supports
    (pin,) = [Requirement(arg) for a in argvs if "install" in a for arg in a if arg.startswith("ray[")]
    pyproject = (CLUSTER_YAML.parent / "pyproject.toml").read_text()  # no tomllib on Python 3.10
    (project,) = [Requirement(r) for r in re.findall(r'^\s*"(ray\[[^"]*)"', pyproject, re.M)]
    (version,) = [spec.version for spec in pin.specifier if spec.operator == "=="]
    assert project.specifier.contains(version), (str(pin), str(project))
    # the `cluster` extra (what a head needs for `ray job submit`) keeps the project's Ray bound
    (extra,) = [Requirement(r) for r in re.findall(r'^cluster = \["(ray\[[^"]*)"\]', pyproject, re.M)]
    assert "default" in extra.extras and extra.specifier == project.specifier, (str(extra), str(project))
    # the data: fetched once into the folder the shell's SSRL_DATA_ROOT names
    (csv,) = [a[2] for a in argvs if a[:2] == ["test", "-f"] and a[2].endswith("/ptbxl_database.csv")]
    data_root = re.search(r"SSRL_DATA_ROOT=([^\s'\"]+)", " ".join(raw["setup_commands"])).group(1)
    assert _home(csv) == _home(data_root) + "/ptbxl_database.csv"
    (url,) = [arg for a in argvs if a[:1] == ["wget"] for arg in a if arg.startswith("https://")]
    assert url.startswith("https://physionet.org/") and url.endswith("-1.0.3.zip")


@pytest.mark.parametrize("path", [CLUSTER_YAML, ONPREM_YAML], ids=lambda p: p.name)
def test_no_hyperparameters(path):
    text = path.read_text().lower()
    for word in HYPERPARAMETERS:
        assert word not in text, f"hyperparameter-like {word!r} in {path.name} (belongs in sweeps/)"


# cluster-onprem.yaml: Ray's local node provider, hosts reached over SSH

def test_onprem_passes_what_ray_up_checks_before_ssh(onprem):
    """`ray up`'s own preparation (defaults, the local provider's node type, schema, bootstrap) accepts it."""
    from ray.autoscaler._private.commands import _bootstrap_config

    prepared = _bootstrap_config(copy.deepcopy(onprem), no_config_cache=True)
    provider, workers = prepared["provider"], onprem["provider"]["worker_ips"]
    assert provider["type"] == "local" and prepared["auth"]["ssh_user"]
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == len(workers)  # every named host joins
    # placeholders from the documentation ranges (RFC 5737), never a real lab's hosts
    hosts = [ipaddress.ip_address(provider["head_ip"]), *map(ipaddress.ip_address, workers)]
    docs = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
    assert all(any(h in n for n in docs) for h in hosts) and len(set(hosts)) == len(hosts), hosts


@pytest.mark.parametrize(("edit", "error"), [
    (lambda r: r.update(available_node_types={"gpu": {}}), "available_node_types is not supported"),
    (lambda r: r["provider"].pop("head_ip"), "Please supply a `head_ip`"),
    (lambda r: r["provider"].update(worker_ips="192.0.2.11"), "is not of type 'array'"),
    (lambda r: r.update(setup_command=[]), "'setup_command' was unexpected"),
])
def test_onprem_validation_refuses_a_broken_copy(onprem, edit, error):
    from ray.autoscaler._private.commands import _bootstrap_config

    bad = copy.deepcopy(onprem)
    edit(bad)
    with pytest.raises(Exception, match=re.escape(error)):
        _bootstrap_config(bad, no_config_cache=True)


SHARED = ("file_mounts", "rsync_exclude", "rsync_filter", "initialization_commands", "setup_commands",
          "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")


def test_onprem_sets_up_like_cluster_yaml(raw, onprem):
    """The same checkout, venv, data, Ray start and MLflow server as on AWS (those are tested above); only
    the provider, SSH and the AWS-only head set-up (boto3) differ."""
    for key in SHARED:
        assert onprem[key] == raw[key], key
    assert onprem["head_setup_commands"] == [] and "boto3" in " ".join(raw["head_setup_commands"])
    assert set(onprem) == set(SHARED) | {"cluster_name", "provider", "auth", "head_setup_commands"}


def test_onprem_no_secrets(onprem):
    """No credentials: an SSH key may be named by its path (Ray copies it to the head), never pasted in."""
    text = ONPREM_YAML.read_text().lower()
    for word in set(SECRET_WORDS) - {"ssh_private_key"}:
        assert word not in text, f"{word!r} appears in cluster-onprem.yaml"
    assert "private key-----" not in text and not re.search(r"akia[0-9a-z]{16}", text)
    key = onprem["auth"].get("ssh_private_key")
    assert key is None or (key.startswith(("~/", "/")) and "\n" not in key)
    assert set(onprem["auth"]) <= {"ssh_user", "ssh_private_key"}
