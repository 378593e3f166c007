"""The README's `ray job submit` command, run as written against a real head started with `ray start --head`.

The command is read from README.md (so the two cannot drift). Only what names the user's cluster is
replaced: the dashboard's port, the S3 bucket, the MLflow server (a sqlite file here) and the GPUs, and the
smoke scale and a temporary out dir are added. `~` is a temporary home laid out like a node of cluster.yaml:
~/ssrl is this checkout, ~/venv this Python's environment, ~/data/PTB-XL a synthetic PTB-XL. The head runs in
its own session with its temp dir under a short temporary folder, and only its own processes are stopped
afterwards (never `ray stop`, which stops every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers import REPO, stage_runs

README = REPO / "README.md"
DASHBOARD = "http://127.0.0.1:8265"  # what `ray dashboard cluster.yaml` forwards to
RAY = Path(sys.executable).parent / "ray"


def readme_job() -> tuple[list[str], str]:
    """The README's `ray job submit ... -- bash -c INNER`: (the ray arguments before `--`, INNER)."""
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.M | re.S)
    lines = [line for b in blocks for line in re.sub(r"\\\n", " ", b).splitlines()]  # continuations joined
    (command,) = [line for line in lines if line.startswith("ray job submit ")]
    argv = shlex.split(command, comments=True)
    split = argv.index("--")
    assert argv[split + 1:split + 3] == ["bash", "-c"] and len(argv) == split + 4, (
        f"the entrypoint must be one `bash -c '...'` (Ray quotes each word after --): {command}")
    return argv[:split], argv[-1]


def _launch_args(inner: str) -> tuple[str, list[str]]:
    """INNER split into its literal prefix up to `launch.py` and launch.py's arguments."""
    prefix, sep, rest = inner.partition(" launch.py ")
    assert sep, inner
    return prefix + " launch.py", shlex.split(rest)


def _options(args: list[str]) -> dict[str, str]:
    return {a: args[i + 1] for i, a in enumerate(args) if a.startswith("--") and i + 1 < len(args)}


def test_readme_job_command_matches_the_cluster_files():
    """The job cds into cluster.yaml's mount of this checkout and runs the venv set-up installs ssrl into."""
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    ray_args, inner = readme_job()
    assert ray_args == ["ray", "job", "submit", "--address", DASHBOARD]
    prefix, args = _launch_args(inner)
    (mount,) = [remote for remote, local in cluster["file_mounts"].items() if local == "."]
    (venv,) = {m.group(1) for c in cluster["setup_commands"] for m in re.finditer(r"-m venv (\S+)", c)}
    assert prefix == f"cd {mount} && {venv}/bin/python launch.py"
    assert any(c.startswith(f"{venv}/bin/pip install") and "-e" in c for c in cluster["setup_commands"])
    opts = _options(args)
    assert (opts["--sweep"], opts["--address"]) == ("scarcity", "auto")
    assert opts["--data-root"] == "~/data/PTB-XL"
    assert any("SSRL_DATA_ROOT=$HOME/data/PTB-XL" in c for c in cluster["setup_commands"])
    # the SSH variant runs the same command
    (exec_line,) = re.findall(r"`ray exec cluster\.yaml --tmux '([^']*) \.\.\.'`", README.read_text())
    assert inner.startswith(exec_line), (exec_line, inner)


def _free_ports(n: int) -> list[int]:
    """n distinct ports free on this machine right now (bound together, then released)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _procs() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, command line) of every process on this machine."""
    out = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp session ...
        out[int(proc.name)] = (int(fields[1]), int(fields[3]), cmdline)
    return out


def _ours(session: int, ray_tmp: Path) -> set[int]:
    """The head's processes: its session (`ray start` ran in a new one), whatever names its temp dir,
    and their descendants (workers, the job's entrypoint, which Ray starts in a session of its own)."""
    procs = _procs()
    ours = {pid for pid, (_, sid, cmd) in procs.items() if sid == session or str(ray_tmp) in cmd}
    while True:
        more = {pid for pid, (ppid, _, _) in procs.items() if ppid in ours} - ours
        if not more:
            return ours - {os.getpid()}
        ours |= more


def _stop(session: int, ray_tmp: Path) -> None:
    """SIGTERM to the head's processes, SIGKILL to whatever is left after 15 s."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        for pid in _ours(session, ray_tmp):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while _ours(session, ray_tmp) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert not _ours(session, ray_tmp), "the test's Ray head did not stop"


@contextlib.contextmanager
def ray_head(env: dict[str, str]) -> Iterator[int]:
    """`ray start --head` with its dashboard on 127.0.0.1, every port a free one; yields the dashboard port."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="ssrl-rj-"))  # Ray's socket paths must stay under ~107 bytes
    sessions = []
    try:
        for attempt in range(3):  # a loaded 2-core machine can miss Ray's start-up timeouts
            gcs, dash, client, agent, agent_grpc, metrics, env_agent, node, objects = _free_ports(9)
            proc = subprocess.Popen(
                [str(RAY), "start", "--head", f"--port={gcs}", "--include-dashboard=true",
                 "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
                 f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                 f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={env_agent}",
                 f"--node-manager-port={node}", f"--object-manager-port={objects}", "--num-cpus=2",
                 f"--temp-dir={ray_tmp}", "--disable-usage-stats"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
            sessions.append(proc.pid)
            out, _ = proc.communicate(timeout=180)
            if proc.returncode == 0:
                break
            _stop(proc.pid, ray_tmp)
            assert attempt < 2, out[-3000:]
        yield dash
    finally:
        for session in sessions:
            _stop(session, ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _home(tmp_path: Path, data: Path) -> Path:
    """A home folder laid out like a node of cluster.yaml: ~/ssrl, ~/venv, ~/data/PTB-XL."""
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (home / "ssrl").symlink_to(REPO)
    (home / "venv").symlink_to(Path(sys.prefix))
    (home / "data" / "PTB-XL").symlink_to(data)
    return home


@pytest.mark.e2e
@pytest.mark.slow
def test_readme_job_submission_runs_the_smoke_sweep(synth_root, cache_dir, tmp_path):
    out, storage = tmp_path / "out", tmp_path / "storage"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    env.update(HOME=str(_home(tmp_path, synth_root)), SSRL_CACHE_DIR=str(cache_dir), RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="disabled", MLFLOW_DISABLE_TELEMETRY="true")
    ray_args, inner = readme_job()
    prefix, args = _launch_args(inner)
    local = {"--storage": str(storage), "--tracking-uri": f"sqlite:///{out}/mlflow.db", "--gpus-per-trial": None}
    assert set(local) <= set(_options(args)), args
    kept = []
    for i, arg in enumerate(args):
        if arg in local or (i and args[i - 1] in local):
            kept += [arg, local[arg]] if arg in local and local[arg] is not None else []
        else:
            kept.append(arg)
    kept += ["--scale", "smoke", "--out", str(out)]
    # `~/...` stays unquoted, so the job's shell expands it on the head, as on a cluster
    inner = prefix + " " + " ".join(a if a.startswith("~/") and shlex.quote(a[2:]) == a[2:] else shlex.quote(a)
                                     for a in kept)

    start = time.monotonic()
    with ray_head(env) as dashboard_port:
        head_up = time.monotonic() - start
        address = ray_args.index("--address") + 1
        ray_args[address] = ray_args[address].replace(":8265", f":{dashboard_port}")
        job = subprocess.run([str(RAY), *ray_args[1:], "--", "bash", "-c", inner], env=env,
                             capture_output=True, text=True, timeout=420, stdin=subprocess.DEVNULL)
        from ray.util.state import list_nodes

        (head,) = list_nodes(address=f"http://127.0.0.1:{dashboard_port}")
    seconds = time.monotonic() - start
    log = job.stdout + job.stderr
    assert job.returncode == 0 and re.search(r"Job '\S+' succeeded", log), log[-5000:]
    assert "cluster auto with 2 CPUs" in log, log[-3000:]  # launch.py's header: it joined the head

    res = json.loads((out / "scarcity" / "results.json").read_text())
    assert res["n_runs"] > 0 and res["n_failed"] == 0, res
    # every trial ran on the head this test started, not on a Ray of the job's own
    rows = [json.loads(line) for f in storage.glob("*/*/result.json") for line in f.read_text().splitlines()]
    assert rows and {r.get("node_id") for r in rows} == {head.node_id}

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    evals = stage_runs(client, res, "eval")
    assert len(evals) == res["n_runs"] and all(r.info.status == "FINISHED" for r in evals)
    assert len({r.data.tags["trial_key"] for r in evals}) == res["n_runs"]
    (parent,) = stage_runs(client, res, "parent")
    assert parent.info.status == "FINISHED"
    print(f"README job: head up in {head_up:.0f} s, {res['n_runs']} runs through `ray job submit`, "
          f"{seconds:.0f} s in all")
