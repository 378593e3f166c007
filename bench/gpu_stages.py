"""The stages of bench.gpu: data, checks, throughput, scarcity; each returns its part of the JSON."""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

import torch

from bench import gpu_checks, gpu_data, gpu_pack, gpu_plan
from bench.gpu_env import GpuMonitor, wfdb_available
from ssrl.data import ECGData

THROUGHPUT_RECORDS = 4000  # synthetic records the throughput bench uses when the data stage read carried folders


def data(args: argparse.Namespace) -> tuple[ECGData, dict]:
    """The bench's PTB-XL (carried or synthetic), cached without wfdb and opened."""
    return gpu_data.prepare(args.records, Path(args.cache_dir), args.data_root)


def checks(args: argparse.Namespace, ecg: ECGData, work_dir: Path) -> dict:
    """The checks of the GPU code paths (bench.gpu_checks) on the bench's device."""
    out = gpu_checks.run_checks(gpu_checks.Ctx(torch.device(args.device), ecg, work_dir / "checks"))
    out["ok"] = not out["failed"]
    return out


def _throughput_argv(args: argparse.Namespace, records: int) -> list[str]:
    """bench.throughput's command line: the sweeps' paper widths and batches on CUDA, tiny ones on CPU."""
    cpus = os.cpu_count() or 1
    argv = ["--device", args.device, "--records", str(records), "--cache-dir", args.cache_dir,
            "--precision", args.precision, "--repeats", "1", "--naive-workers"]
    argv += [str(min(8, cpus))] if wfdb_available() else []
    if args.tiny:
        return argv + ["--width", "8", "--batch-size", "32", "--steps", "2", "--warmup", "1", "--threads", "1"]
    return argv + ["--steps", "10", "--warmup", "3", "--threads", str(min(8, cpus))]


def throughput(args: argparse.Namespace, ecg: ECGData) -> dict:
    """bench.throughput on this device: the loops' fast path, its compute bound and the naive loop, samples/s."""
    from bench import throughput as tp  # imported here: it needs wfdb or its placeholder first

    records = len(ecg.meta) if ecg.name == "synthetic" else THROUGHPUT_RECORDS
    gpu_data.prepare(records, Path(args.cache_dir))  # its data, cached without wfdb (reused when it is ours)
    res = tp.run(tp.parse_args(_throughput_argv(args, records)))
    keep = ("samples_per_s", "bound_samples_per_s", "naive_samples_per_s", "speedup", "fraction_of_bound",
            "precision", "width", "batch_size")
    out = {task: {k: res[task][k] for k in keep if k in res[task]} for task in tp.TASKS if task in res}
    out["naive"] = "measured" if wfdb_available() else "skipped: wfdb is not installed (carry its wheel)"
    out["settings"] = res.get("settings", {})
    return out


def _pretrain_summary(r: dict) -> dict:
    """Wall, epochs and pool records per second of the pretraining job."""
    pool, epochs = r["result"].get("n_pool", 0), r["epochs"]
    return {"wall_s": round(r["wall_s"], 1), "epochs": epochs, "epoch_s": r["epoch_s"],
            "records_per_s": round(pool * epochs / r["wall_s"], 1) if r["wall_s"] else None,
            "best_probe_score": r["result"].get("best_probe_score"), "error": r["error"], "cut": r["cut"]}


def _finetune_summary(ok: list[dict]) -> dict:
    """Span, labelled records trained per second, and mean test AUROC per track of the finished fine-tuning jobs."""
    span = max((r["end"] for r in ok), default=0.0) - min((r["start"] for r in ok), default=0.0)
    seen = sum(r["result"].get("n_labelled_used", 0) * r["result"].get("epochs_run", 0) for r in ok)
    by_track: dict[str, list[float]] = {}
    for r in ok:
        by_track.setdefault(r["group"].split("@")[0], []).append(r["result"].get("test_macro_auroc", math.nan))
    return {"span_s": round(span, 1), "train_records_per_s": round(seen / span, 1) if span else None,
            "test_macro_auroc_by_track": {t: round(statistics.mean(v), 4) for t, v in by_track.items()}}


def _compact(r: dict, t_ref: float) -> dict:
    """One job's row for the JSON; start and end in seconds from t_ref."""
    return {"name": r["name"], "start_s": round(r["start"] - t_ref, 2), "end_s": round(r["end"] - t_ref, 2),
            "pid": r["pid"], "wall_s": round(r["wall_s"], 2), "epochs": r["epochs"],
            "epoch_s": None if r["epoch_s"] is None else round(r["epoch_s"], 3), "peak_mib": r["peak_mib"],
            "auroc": r["result"].get("test_macro_auroc"), "error": r["error"], "cut": r["cut"]}


def _memory_mib(device: str) -> float:
    """Device memory in MiB: the GPU's, or the machine's RAM on CPU."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[1] / 2**20
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


def scarcity(args: argparse.Namespace, ecg: ECGData, work_dir: Path, monitor: GpuMonitor, deadline: float) -> dict:
    """The scarcity workload (bench.gpu_plan) packed k per device; k from a probe unless --k is given.

    Trials still running at `deadline` (time.time()) stop after their epoch: listed in `cut`, the
    sweep then `complete: false` and its measured time a lower bound.
    """
    where = {"data_root": str(ecg.root), "cache_dir": str(ecg.cache_path.parent), "device": args.device,
             "precision": args.precision}
    plan = gpu_plan.plan("smoke" if args.tiny else "paper", where, work_dir / "scarcity")
    cpus = os.cpu_count() or 1
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()  # what the earlier stages cached in this process is free for the workers
    t0 = time.time()
    heaviest = max((j for j in plan.finetune if not j.needs), key=lambda j: j.cost)
    candidates = tuple(k for k in gpu_pack.CANDIDATES if k <= max(1, cpus))
    probe = {"k": args.k, "given": True} if args.k else gpu_pack.probe(heaviest.config, candidates, cpus,
                                                                      _memory_mib(args.device))
    t1 = time.time()
    rows = gpu_pack.run_packed([plan.pretrain, *plan.finetune], probe["k"], max(1, cpus // probe["k"]),
                               work_dir / "scarcity", deadline)
    t2 = time.time()
    done = [r for r in rows if not r["error"] and not r["cut"]]
    timed = [r for r in rows if r["kind"] == "finetune" and not r["error"]]  # cut ones too: their epochs count
    concurrency = sum(r["wall_s"] for r in rows) / (t2 - t1)
    return {
        "scale": plan.scale, "k": probe["k"], "probe": {**probe, "wall_s": round(t1 - t0, 1)},
        "packed_wall_s": round(t2 - t1, 1), "packed_gpu": monitor.window(t1, t2),
        "planned": {"pretrain": 1, "finetune": len(plan.finetune), "cells": plan.cells, "seeds": plan.seeds},
        "completed": {kind: sum(r["kind"] == kind for r in done) for kind in ("pretrain", "finetune")},
        "failed": {r["name"]: r["error"] for r in rows if r["error"]},
        "cut": [r["name"] for r in rows if r["cut"]], "complete": len(done) == len(rows),
        "pretrain": _pretrain_summary(next(r for r in rows if r["kind"] == "pretrain")),
        "finetune": _finetune_summary([r for r in done if r["kind"] == "finetune"]),
        "concurrency": round(concurrency, 2),
        "peak_mib_per_process": max((r["peak_mib"] for r in done), default=None),
        "left_out": plan.left_out,
        "paper_sweep": {**gpu_plan.paper_sweep(plan, timed, t2 - t1, concurrency), "complete": len(done) == len(rows)},
        "jobs": [_compact(r, t1) for r in rows],
    }
