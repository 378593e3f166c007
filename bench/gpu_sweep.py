"""bench.gpu's sweep stage: launch.py as a user runs it, stopped at a deadline, and what the run wrote.

    python launch.py --sweep SWEEP --scale SCALE --data-root ROOT --out DIR [--gpus-per-trial F] [--precision P]

runs as a child process in a session of its own. At the deadline it is stopped as Ctrl-C in a terminal
stops it (SIGINT to its process group: Tune saves its trials, the run exits 130), then whatever of that
session is left gets SIGTERM and SIGKILL. Then the stage reads DIR: <sweep>/state.json (run id, each
stage's wall seconds), <sweep>/results.json (n_runs, n_failed; not written when the run was cut) and
Ray's experiment folders (trials per stage, and a pretraining's records per second from its rows'
n_pool and Tune's time_this_iter_s). Nothing here is estimated.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDS = ("ray", "mlflow", "optuna", "wfdb")  # launch.py's imports that the lent GPU machines lack
BUNDLE_HINT = "install the offline bundle first: README, Installing offline"
STOP_GRACE_S = 30.0  # after SIGINT: Tune saves its trials and Ray shuts down
KILL_GRACE_S = 5.0  # after SIGTERM to what is left of the run's session
STAGES = ("pretrain", "search", "eval")


class StageError(Exception):
    """The stage could not run; its message is the one line the JSON reports."""


@dataclass(frozen=True)
class Launch:
    """One launch.py run: what to run, where, and until when (a time.time() value)."""

    sweep: str
    scale: str
    data_root: Path
    out_dir: Path
    deadline: float
    env: dict
    extra: tuple[str, ...] = ()  # further launch.py options, e.g. ("--gpus-per-trial", "0.25")

    def command(self) -> list[str]:
        """The launch.py command line, as a user types it."""
        return [sys.executable, "launch.py", "--sweep", self.sweep, "--scale", self.scale, "--data-root",
                str(self.data_root), "--out", str(self.out_dir), *self.extra]


def missing_modules(env: dict) -> list[str]:
    """Which of NEEDS the interpreter that will run launch.py cannot import (checked in a fresh one)."""
    code = (f"import importlib, json\nmissing = []\nfor m in {list(NEEDS)!r}:\n    try:\n"
            "        importlib.import_module(m)\n    except Exception:\n        missing.append(m)\n"
            "print(json.dumps(missing))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return list(NEEDS)


def session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`, from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:  # after "pid (comm)": state ppid pgrp session
            pids.append(int(entry.name))
    return pids


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(sid: int, seconds: float) -> list[int]:
    """Wait up to `seconds` for session `sid` to empty; the pids still there."""
    end = time.time() + seconds
    while (left := session_pids(sid)) and time.time() < end:
        time.sleep(0.2)
    return left


def _clear_session(sid: int) -> dict:
    """SIGTERM, then SIGKILL, whatever is left of the session; how many of each it took."""
    left = session_pids(sid)
    out = {"sigterm": len(left), "sigkill": 0}
    if left:
        _signal_all(left, signal.SIGTERM)
        left = _wait_gone(sid, KILL_GRACE_S)
        out["sigkill"] = len(left)
        _signal_all(left, signal.SIGKILL)
        left = _wait_gone(sid, KILL_GRACE_S)
    out["left"] = len(left)
    return out


def run_launch(launch: Launch, console: Path) -> dict:
    """Run launch.py until it exits or the deadline; stop it cleanly at the deadline. Its exit, wall, stop."""
    if launch.deadline <= time.time():
        return {"started": False, "cut": True, "exit_code": None, "launch_wall_s": 0.0}
    t0 = time.time()
    with console.open("w") as f:
        proc = subprocess.Popen(launch.command(), cwd=ROOT, env=launch.env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own session and process group: pgid = sid = pid
        cut, stopped = False, None
        try:
            proc.wait(timeout=max(0.0, launch.deadline - time.time()))
        except subprocess.TimeoutExpired:
            cut, t_stop = True, time.time()
            with contextlib.suppress(ProcessLookupError):  # it may have ended just now
                os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_GRACE_S)
            stopped = {"signal": "SIGINT", "exited_within_grace": proc.poll() is not None,
                       "stop_s": round(time.time() - t_stop, 1)}
        finally:
            cleared = _clear_session(proc.pid)  # Ray's processes, had the run not shut them down
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    out = {"started": True, "cut": cut, "exit_code": proc.returncode, "launch_wall_s": round(time.time() - t0, 1),
           "session": proc.pid, "processes_cleared": cleared}
    if stopped:
        out["stopped"] = stopped
    return out


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _rows(trial_dir: Path) -> list[dict]:
    """The results Tune recorded for one trial (result.json, one JSON object a line)."""
    try:
        lines = (trial_dir / "result.json").read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short when the run was killed
            break
    return rows


def _records_per_s(rows: list[dict]) -> float | None:
    """A pretraining's pool records per second over its epochs after the first (setup excluded)."""
    n_pool = rows[-1].get("n_pool") if rows else None
    steady = [r.get("time_this_iter_s") or 0.0 for r in rows[1:]]
    if not n_pool or not steady or sum(steady) <= 0:
        return None
    return round(n_pool * len(steady) / sum(steady), 1)


def trials_of(experiment: Path) -> dict:
    """Trials of one Tune experiment folder: how many Tune created, finished (their final report), failed, and
    neither (not started, stopped early by ASHA, or cut)."""
    dirs = sorted(d for d in experiment.iterdir() if d.is_dir() and not d.name.startswith(".")) if (
        experiment.is_dir()) else []
    rows = [_rows(d) for d in dirs]
    done = sum(bool(r) and bool(r[-1].get("done")) for r in rows)
    failed = sum((d / "error.txt").exists() for d in dirs)
    out = {"trials": len(dirs), "done": done, "failed": failed, "other": len(dirs) - done - failed}
    rates = [x for x in (_records_per_s(r) for r in rows) if x is not None]
    if rates:
        out["samples_per_s"] = {"median": round(statistics.median(rates), 1), "per_trial": rates}
    return out


def read_run(out_dir: Path, sweep: str) -> dict:
    """What a launch.py run left in out_dir: its state, its results' counts, and its trials per stage."""
    state = _read_json(out_dir / sweep / "state.json") or {}
    run_id = state.get("run_id")
    results = _read_json(out_dir / sweep / "results.json")
    if results is not None and results.get("run_id") != run_id:
        results = None  # an earlier run's
    names = {"pretrain": f"pretrain-{run_id}", "search": f"{sweep}-{run_id}-search", "eval": f"{sweep}-{run_id}-eval"}
    stages = {s: trials_of(out_dir / "ray" / names[s]) for s in STAGES} if run_id else {}
    seconds = state.get("stage_seconds", {})
    for s, got in stages.items():
        got["wall_s"] = seconds.get(s)
    out = {"run_id": run_id, "stage_seconds": seconds, "stages": stages, "results": None}
    if results is not None:
        out["results"] = {k: results.get(k) for k in ("n_runs", "n_failed", "n_skipped", "stage_seconds")}
        out["results"]["cells"] = len(results.get("cells", []))
    return out


def planned(sweep: str, scale: str) -> dict[str, int]:
    """Trials per stage the sweep files give at this scale (what a run that finishes runs, none reused)."""
    from ssrl.tune.options import LaunchOptions, specs

    spec, pre = specs(LaunchOptions(sweep=sweep, scale=scale), scale)
    if not spec.kind.evaluates:
        return {"pretrain": len(spec.methods) * len(spec.seeds), "search": 0, "eval": 0}
    searched = len(spec.searched_cells) * spec.search.samples_per_group if spec.search.enabled else 0
    return {"pretrain": len(spec.pretrain_methods) * len(pre.seeds) if pre is not None and spec.needs_pretraining
            else 0, "search": searched, "eval": len(spec.cells) * len(spec.seeds)}


def _tail(path: Path, n: int = 15) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def sweep_stage(launch: Launch, keep: Path | None = None) -> dict:
    """Check launch.py's imports, run it under the deadline, read what it wrote; copy its records to `keep`."""
    missing = missing_modules(launch.env)
    if missing:
        raise StageError(f"{', '.join(missing)} not importable: {BUNDLE_HINT}")
    launch.out_dir.mkdir(parents=True, exist_ok=True)
    console = launch.out_dir / "console.txt"
    ran = run_launch(launch, console)
    got = read_run(launch.out_dir, launch.sweep)
    want = planned(launch.sweep, launch.scale)
    for s, n in want.items():
        got["stages"].setdefault(s, {})["planned"] = n
    out = {"sweep": launch.sweep, "scale": launch.scale, "command": " ".join(launch.command()[1:]), **ran, **got}
    if ran["started"]:  # launch.py's start (imports, input checks, Ray, MLflow) and its results: wall - stages
        out["outside_stages_s"] = round(ran["launch_wall_s"] - sum(got["stage_seconds"].values()), 1)
    if ran["exit_code"] not in (0, None) or not ran["started"]:
        out["console_tail"] = _tail(console)
    trials_failed = ran["exit_code"] == 1 and (got["results"] or {}).get("n_failed")  # launch.py's exit 1
    if ran["started"] and not ran["cut"] and ran["exit_code"] != 0 and not trials_failed:
        tail = [ln for ln in out["console_tail"] if ln.strip()]
        why = next((ln for ln in reversed(tail) if ln.startswith("error:")), tail[-1] if tail else "no output")
        out["error"] = f"launch.py exited {ran['exit_code']}: {why}"[:500]
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        for src in [*(launch.out_dir / launch.sweep / n for n in ("state.json", "results.json", "results.md")),
                    console]:
            if src.exists():
                shutil.copy2(src, keep / src.name)
    return out
