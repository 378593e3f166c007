"""Ctrl-C stops a sweep with exit code 130 and one line, however Tune leaves the trials it stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ssrl.tune import stages

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("status", "last", "early_stops", "left"), [
    ("RUNNING", {}, False, True),
    ("PENDING", None, False, True),
    ("ERROR", {}, False, False),  # failed for good: a result row with its reason
    ("TERMINATED", {"epoch": 3, "done": True}, False, False),
    ("TERMINATED", {"epoch": 1}, False, True),  # stopped by the interrupt mid-training
    ("TERMINATED", {}, False, True),  # given an actor but stopped before its first report
    ("TERMINATED", {"epoch": 1}, True, False),  # a search: ASHA stops trials early
    ("TERMINATED", {}, True, True),
    ("TERMINATED", None, False, False),  # nothing known but the status
])
def test_unfinished_trials(status, last, early_stops, left):
    trial = SimpleNamespace(status=status) if last is None else SimpleNamespace(status=status, last_result=last)
    assert stages._unfinished(trial, early_stops) is left


def test_tunes_stop_handler_is_detected_and_removed():
    """Tune puts one handler on SIGINT and SIGUSR1 and, when it fires, gives SIGINT its old handler back."""
    before = {s: signal.getsignal(s) for s in stages._STOP_SIGNALS}

    def tunes(sig, frame):
        pass

    for fired in (False, True):
        for sig in stages._STOP_SIGNALS:
            signal.signal(sig, tunes)
        if fired:
            signal.signal(signal.SIGINT, before[signal.SIGINT])
        assert stages._tune_was_interrupted(before) is fired
        assert {s: signal.getsignal(s) for s in stages._STOP_SIGNALS} == before  # Ctrl-C works as before


@pytest.mark.e2e
def test_ctrl_c_in_a_terminal_stops_the_sweep_with_130(edited_sweeps, synth_root, cache_dir, tmp_path):
    """SIGINT to the whole process group, as a terminal sends it, while trials run and others wait for
    theirs: Tune ends the started ones as TERMINATED, which must not pass for finished."""
    sweeps = edited_sweeps(scarcity={"track_train": {}, "scales.smoke.tracks": ["supervised"],
                                     "scales.smoke.fractions": [1.0],
                                     "scales.smoke.seeds": [42, 52, 62, 72],
                                     "scales.smoke.train.epochs": 400, "scales.smoke.train.patience": 400})
    out = tmp_path / "runs"
    ray_tmp = Path(tempfile.mkdtemp(prefix="ssrl-ray-"))
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "SSRL_CACHE_DIR": str(cache_dir)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "launch.py", "--sweep", "scarcity", "--scale", "smoke", "--data-root",
                             str(synth_root), "--out", str(out), "--sweeps-dir", str(sweeps)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        seen = []
        for line in proc.stdout:  # the eval stage's first progress line: its trials are being started
            seen.append(line)
            if line.startswith("eval: "):
                break
        assert seen and seen[-1].startswith("eval: "), "".join(seen) + proc.stderr.read()
        time.sleep(4)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 130, stdout[-2000:] + stderr[-3000:]
    assert stderr.strip().splitlines() == ["error: interrupted; run the same command with --resume to continue"]
    assert "Traceback" not in stdout and not (out / "scarcity" / "results.json").exists()
