"""A local `mlflow server` (what `mlflow ui` runs) in its own process group, stopped by its pid.

A test helper (tests/conftest.py puts tests/ on sys.path: `import local_mlflow`), used by the tests that
track into a real server and by scripts/mlflow_screenshot.py. It binds to 127.0.0.1 only, with one
worker and MLflow's job runner off, so it starts in about ten seconds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(backend_uri: str, port: int, log: Path, *extra: str, cwd: Path | None = None) -> subprocess.Popen:
    """Start `mlflow server --backend-store-uri backend_uri` on 127.0.0.1:port, output to log; no wait."""
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow if mlflow.exists() else "mlflow"), "server", "--backend-store-uri", backend_uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *extra]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    with log.open("w") as f:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(proc: subprocess.Popen, port: int, timeout_s: float = 120.0) -> bool:
    """True once http://127.0.0.1:port/health answers 200; False if proc exits or timeout_s passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False


def stop(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the process group started by `start` (or any start_new_session child), SIGKILL after grace_s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
