"""Wall time of a whole sweep and how busy its trial slots were.

    python -m bench.sweep [--sweep scarcity] [--scale demo] [--json]

Runs `ssrl.tune.runner.run_sweep` exactly as `python launch.py --sweep scarcity` does (the built-in
synthetic PTB-XL unless --data-root), into a temporary out dir, and times every Tuner the sweep
starts (pretraining, search, evaluation). Per stage:

    utilisation = sum of the trials' time_total_s / (stage wall time x concurrent slots)

where time_total_s is what Ray Tune records for a trial (its function from start to its last
report: data open, training, evaluation) and slots = min(trials, max_concurrent,
cluster CPUs // CPUs per trial). The stage wall time is the driver's `Tuner.fit()` call, so trial
start-up (worker process, imports), scheduling gaps and a tail where fewer trials than slots
remain all count as idle. The total is the same ratio over all stages, weighted by slot-seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class CPUMeter(threading.Thread):
    """CPU seconds (user + system) of this process and all its descendants (Ray's and the trials'), from /proc.

    Sampled every `every` seconds: a process that ends between two samples loses at most that much.
    On a machine shared with other work this is what the sweep itself cost, whatever the load.
    """

    def __init__(self, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.every, self.seen, self.stop = every, {}, threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _sample(self) -> None:
        stats = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # after "pid (comm)": state ppid ... utime(12th) stime(13th) ... starttime(20th)
            stats[int(pid)] = (int(fields[1]), int(fields[11]) + int(fields[12]), fields[19])
        mine, todo = set(), [os.getpid()]
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        while todo:
            pid = todo.pop()
            mine.add(pid)
            todo += children.get(pid, [])
        for pid in mine & stats.keys():
            _, ticks, start = stats[pid]
            self.seen[(pid, start)] = max(ticks, self.seen.get((pid, start), 0))

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self._sample()

    def seconds(self) -> float | None:
        """CPU seconds so far (None where /proc is missing)."""
        if not Path("/proc/self/stat").exists():
            return None
        self._sample()
        return sum(self.seen.values()) / self.tick


def _trial_seconds(grid: Any) -> list[dict[str, Any]]:
    """Per trial: Tune's time_total_s, status, and the epochs it ran."""
    out = []
    for r in grid:
        m = r.metrics or {}
        out.append({"time_total_s": float(m.get("time_total_s") or 0.0), "error": r.error is not None,
                    "iterations": int(m.get("training_iteration") or 0)})
    return out


def instrument(reuse_actors: bool | None = None, pretrain_cpus: float | None = None) -> list[dict[str, Any]]:
    """Record every Tuner the stages start (through stages.wrap_tuner_runs): wall time, resources, trials.

    To compare settings: reuse_actors overrides TuneConfig.reuse_actors, pretrain_cpus the CPUs of
    pretraining trials (None: as the sweep sets them).
    """
    from ssrl.tune import stages

    record: list[dict[str, Any]] = []

    def timed(inner, ctx, name, trainable, param_space, resources, tune_config, stage):
        if reuse_actors is not None:
            tune_config.reuse_actors = reuse_actors
        if pretrain_cpus is not None and stage == "pretrain":
            resources = {**resources, "cpu": pretrain_cpus}
        t0 = time.perf_counter()
        grid = inner(ctx, name, trainable, param_space, resources, tune_config, stage)
        record.append({"stage": stage, "tuner": name, "wall_s": time.perf_counter() - t0,
                       "cpus_per_trial": resources.get("cpu", 1), "gpus_per_trial": resources.get("gpu", 0),
                       "max_concurrent": tune_config.max_concurrent_trials, "reuse_actors": tune_config.reuse_actors,
                       "trials": _trial_seconds(grid)})
        return grid

    stages.wrap_tuner_runs(lambda run: functools.partial(timed, run))
    return record


def summarise(record: list[dict[str, Any]], cluster_cpus: float, cluster_gpus: float) -> dict[str, Any]:
    """Utilisation per stage and overall from the instrumented Tuner runs.

    `utilisation` counts the slots a stage can fill (a stage of one trial has one slot);
    `cpu_utilisation` = sum(trial time x its CPUs) / (wall x cluster CPUs) also counts CPUs that no
    trial asked for (e.g. one 1-CPU pretraining trial on a 2-CPU machine leaves half idle).
    """
    stages, busy_all, slot_s_all, cpu_busy_all, wall_all = {}, 0.0, 0.0, 0.0, 0.0
    for r in record:
        n = len(r["trials"])
        by_cpu = math.floor(cluster_cpus / r["cpus_per_trial"] + 1e-9) if r["cpus_per_trial"] else n
        by_gpu = math.floor(cluster_gpus / r["gpus_per_trial"] + 1e-9) if r["gpus_per_trial"] else n
        slots = max(1, min(n, by_cpu, by_gpu, r["max_concurrent"] or n))
        busy = sum(t["time_total_s"] for t in r["trials"])
        stages[r["stage"]] = {
            "wall_s": round(r["wall_s"], 1), "trials": n, "failed": sum(t["error"] for t in r["trials"]),
            "slots": slots, "cpus_per_trial": r["cpus_per_trial"], "reuse_actors": r["reuse_actors"],
            "trial_time_s_sum": round(busy, 1),
            "trial_time_s_mean": round(busy / max(n, 1), 2),
            "utilisation": round(busy / (r["wall_s"] * slots), 3),
            "cpu_utilisation": round(busy * r["cpus_per_trial"] / (r["wall_s"] * cluster_cpus), 3),
            "idle_s_per_trial": round((r["wall_s"] * slots - busy) / max(n, 1), 2),
            "trials_per_hour": round(3600 * n / r["wall_s"], 1),
        }
        busy_all, slot_s_all = busy_all + busy, slot_s_all + r["wall_s"] * slots
        cpu_busy_all, wall_all = cpu_busy_all + busy * r["cpus_per_trial"], wall_all + r["wall_s"]
    return {"stages": stages, "utilisation": round(busy_all / slot_s_all, 3) if slot_s_all else None,
            "cpu_utilisation": round(cpu_busy_all / (wall_all * cluster_cpus), 3) if wall_all else None}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Prepare the data (timed apart), run the sweep, and summarise."""
    import ray

    from ssrl.tune.dataset import locate, open_dataset
    from ssrl.tune.runner import LaunchOptions, run_sweep
    from ssrl.tune.spec import load_sweep

    spec = load_sweep(args.sweep, args.scale)
    t0 = time.perf_counter()
    root, _ = locate(args.data_root, spec.data_records)
    open_dataset(root, 100)  # synthetic data written and cached once per machine: not part of the sweep
    prep_s = time.perf_counter() - t0
    out = Path(args.out or tempfile.mkdtemp(prefix="ssrl-bench-sweep-"))
    record = instrument({"yes": True, "no": False}.get(args.reuse_actors), args.pretrain_cpus)
    opts = LaunchOptions(sweep=args.sweep, scale=args.scale, data_root=args.data_root, out=str(out),
                         max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial,
                         gpus_per_trial=args.gpus_per_trial)
    meter = CPUMeter()
    meter.start()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Tune's progress tables; stdout is for the summary
        results = run_sweep(opts)
    wall = time.perf_counter() - t0
    cpu_s = meter.seconds()
    meter.stop.set()
    res = ray.cluster_resources()
    summary = summarise(record, res.get("CPU", 1), res.get("GPU", 0))
    if not args.out and not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return {"sweep": args.sweep, "scale": args.scale, "wall_s": round(wall, 1), "data_prep_s": round(prep_s, 1),
            "stage_wall_s_sum": round(sum(r["wall_s"] for r in record), 1),
            "outside_stages_s": round(wall - sum(r["wall_s"] for r in record), 1),
            "cpu_s": None if cpu_s is None else round(cpu_s, 1),
            "cpu_s_per_cpu": None if cpu_s is None else round(cpu_s / res.get("CPU", 1), 1),
            **summary, "n_runs": results.get("n_runs"), "n_failed": results.get("n_failed"),
            "cluster_cpus": res.get("CPU"), "cluster_gpus": res.get("GPU", 0), "cpu_count": os.cpu_count(),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2), "out": str(out) if (args.out or args.keep) else None}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", default="scarcity", choices=["pretrain", "scarcity", "fewshot"])
    p.add_argument("--scale", default="demo", choices=["smoke", "demo", "paper"])
    p.add_argument("--data-root", help="PTB-XL folder (default: the built-in synthetic one)")
    p.add_argument("--out", help="out dir (default: a temporary one, removed afterwards)")
    p.add_argument("--keep", action="store_true", help="keep the temporary out dir")
    p.add_argument("--max-concurrent", type=int)
    p.add_argument("--cpus-per-trial", type=float)
    p.add_argument("--gpus-per-trial", type=float, help="e.g. 1, 0.5, 0.25, 0.125 to compare GPU packings")
    p.add_argument("--reuse-actors", choices=["yes", "no", "sweep"], default="sweep",
                   help="override Tune's reuse_actors (default: as the sweep's TuneConfig sets it)")
    p.add_argument("--pretrain-cpus", type=float, help="override the CPUs of a pretraining trial")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run and print JSON or a short table."""
    args = parse_args(argv)
    out = run(args)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{out['sweep']} ({out['scale']}): wall {out['wall_s']} s, utilisation {out['utilisation']}")
    for name, s in out["stages"].items():
        print(f"  {name}: {s['trials']} trials on {s['slots']} slots, wall {s['wall_s']} s, "
              f"utilisation {s['utilisation']}, idle {s['idle_s_per_trial']} s per trial")
    return 0


if __name__ == "__main__":
    sys.exit(main())
