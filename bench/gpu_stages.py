"""The stages of bench.gpu: data, checks, throughput, sweep; each returns its part of the JSON."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from bench import gpu_checks, gpu_data, gpu_sweep
from bench.gpu_env import wfdb_available
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
            "--precision", args.precision or "auto", "--repeats", "1", "--naive-workers"]
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
            "precision", "width", "batch_size", "flops_per_sample", "tflops", "peak_tflops", "share_of_peak",
            "step_alone_share_of_peak", "compile_s")
    out = {task: {k: res[task][k] for k in keep if k in res[task]} for task in tp.TASKS if task in res}
    out["naive"] = "measured" if wfdb_available() else "skipped: wfdb is not installed (the offline bundle brings it)"
    out["settings"] = res.get("settings", {})
    return out


def _launch_env(device: str, cache_dir: str) -> dict:
    """launch.py's environment: the data stage's signal cache, and only the bench's device visible."""
    env = {**os.environ, "SSRL_CACHE_DIR": str(Path(cache_dir).resolve()), "PYTHONUNBUFFERED": "1"}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif ":" in device:
        env["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
    return env


def sweep(args: argparse.Namespace, data_root: Path, work_dir: Path, deadline: float) -> dict:
    """`launch.py --sweep ... --scale ...` on the data stage's data until it ends or `deadline` (bench.gpu_sweep)."""
    extra = (("--gpus-per-trial", str(args.gpus_per_trial)) if args.gpus_per_trial is not None else ()) + (
        ("--precision", args.precision) if args.precision else ())
    launch = gpu_sweep.Launch(args.sweep, args.scale, data_root, work_dir / "runs", deadline,
                              _launch_env(args.device, args.cache_dir), extra)
    keep = Path(f"{Path(args.out).with_suffix('')}-sweep") if args.out else None
    return gpu_sweep.sweep_stage(launch, keep)
