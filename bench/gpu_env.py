"""What bench.gpu needs from the machine: wfdb made optional, GPU sampling, a description of the device.

Nothing here imports ssrl: `allow_missing_wfdb` must run before any module that does.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import types

OPTIONAL = ("ray", "mlflow", "optuna", "wfdb")  # absent on the lent GPU machines until the offline bundle is in
WFDB_HINT = "install the offline bundle (README, Installing offline)"


def _placeholder(reason: str) -> types.ModuleType:
    """A stand-in `wfdb` module whose every function raises, naming what is missing."""
    mod = types.ModuleType("wfdb", f"placeholder: wfdb is not installed ({reason})")

    def missing(name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        raise ModuleNotFoundError(f"wfdb.{name}: wfdb is not installed ({reason}); {WFDB_HINT}")

    mod.__getattr__ = missing  # type: ignore[method-assign]
    mod.IS_PLACEHOLDER, mod.REASON = True, f"wfdb is not installed ({reason})"  # type: ignore[attr-defined]
    return mod


def allow_missing_wfdb() -> str | None:
    """Let ssrl.data import without wfdb (signals then come from a cache written here); why it is missing, or None."""
    mod = sys.modules.get("wfdb")
    if mod is not None:
        return getattr(mod, "REASON", None) if getattr(mod, "IS_PLACEHOLDER", False) else None
    try:
        import wfdb  # noqa: F401
    except ImportError as e:
        sys.modules["wfdb"] = _placeholder(str(e))
        return sys.modules["wfdb"].REASON
    return None


def wfdb_available() -> bool:
    """True when the real wfdb is importable (not the placeholder)."""
    return allow_missing_wfdb() is None


def loaded_optional() -> list[str]:
    """Which of OPTIONAL this process has imported (the real ones): the sweep stage runs them in launch.py only."""
    return sorted(m for m in OPTIONAL if m in sys.modules and not getattr(sys.modules[m], "IS_PLACEHOLDER", False))


def device_info(device: str) -> dict:
    """The device the bench ran on, in words and numbers."""
    import torch

    info = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
            "cpus": os.cpu_count(), "cuda": torch.version.cuda}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                    bf16=bool(torch.cuda.is_bf16_supported()))
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


class GpuMonitor:
    """Samples nvidia-smi (utilisation %, memory used MiB) every `every` seconds in a thread."""

    QUERY = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]

    def __init__(self, device: str, every: float = 0.5) -> None:
        self.samples: list[tuple[float, float, float]] = []  # (time.time(), util %, memory used MiB)
        self.every, self._stop = every, threading.Event()
        index = device.split(":")[1] if ":" in device else os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
        self._cmd = [shutil.which("nvidia-smi") or "", f"--id={index}", *self.QUERY]
        self.available = device.startswith("cuda") and bool(self._cmd[0])
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GpuMonitor:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(self._cmd, capture_output=True, text=True, timeout=5).stdout
                util, mem = (float(v) for v in out.strip().splitlines()[0].split(","))
                self.samples.append((time.time(), util, mem))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass
            self._stop.wait(self.every)

    def window(self, t0: float, t1: float) -> dict | None:
        """Mean and max utilisation and the most memory used between two time.time() stamps (None: no samples)."""
        got = [(u, m) for t, u, m in self.samples if t0 <= t <= t1]
        if not got:
            return None
        utils = [u for u, _ in got]
        return {"util_mean_pct": round(sum(utils) / len(utils), 1), "util_max_pct": max(utils),
                "memory_used_max_mib": max(m for _, m in got), "samples": len(got)}
