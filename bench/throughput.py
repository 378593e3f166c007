"""Training throughput: the fast path the loops use beside a reference-style loop, same model and data.

    python -m bench.throughput --encoder cnn6 [--device cpu|cuda] [--scale demo|paper] [--compile auto|on|off] [--json]

Fast path (what ssrl.train.pretraining / finetuning do per step): `Signals.get` (memmap batch on
CPU, a GPU-resident tensor on CUDA), the `simclr` preset batched on the device for two views,
`SimCLR.loss` (NT-Xent) under `autocast`, AdamW; fine-tuning: encoder + linear head with
`BCEWithLogitsLoss` on the same kind of batches (the scarcity tracks use no augmentation). The step
is the loops' own (ssrl.train.step): forward and loss compiled as the `compile` setting says (`auto`:
on CUDA only), losses read off the device at the end of the epoch.
Naive path (bench.naive): a Dataset that reads each WFDB record from disk on every access,
per-record NumPy augmentation (two views), a DataLoader with 0 and 2 worker processes.
Both: same model and initial weights, batch size, torch threads, optimiser and loss. Each
measurement is one epoch of `--steps` batches over exactly `steps x batch` records, timed from
creating the batch iterator to the last optimiser step, after a warm-up epoch of `--warmup` steps;
the variants are interleaved `--repeats` times and the median is reported. `naive_samples_per_s`
is the faster of the naive worker settings. `cpu_samples_per_s` divides by the CPU seconds of the
benchmark process instead (its threads; DataLoader workers not counted): with idle threads passive
(below) it holds up when other jobs share the cores and wall-clock rates swing. Data: a synthetic
PTB-XL of `--records` records, written and cached once under `--cache-dir`.

Model width and batch sizes are those the sweeps train at `--scale` (sweeps/pretrain.yaml for
pretraining, sweeps/scarcity.yaml for fine-tuning): `demo` (the default on CPU: cnn6 width 16,
batches 128 / 64) or `paper` (the default on CUDA: width 64, batches 256 / 128); --width and
--batch-size override them. OMP_WAIT_POLICY defaults to PASSIVE (export it to override): with
OpenMP's default spinning, 2-thread steps run several times slower whenever other work shares
the cores, for both paths alike (docs/RESULTS.md, performance).

FLOPs per sample: one training step (SimCLR: two views; forward and backward) at the task's batch
size, counted by torch's FlopCounterMode (matrix products and convolutions, a multiply-add = 2; not
elementwise work or the optimiser), divided by the batch size. `tflops` = FLOPs per sample x samples/s;
`share_of_peak` divides it by a device's nominal dense peak (`--peak-tflops`, else a table of known
GPUs at bf16; none on CPU): a share of a datasheet number, measured in software.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP; see the docstring

import numpy as np  # noqa: E402
import torch
from filelock import FileLock
from torch import nn
from torch.utils.data import DataLoader, Subset

from bench.naive import WFDBDataset
from ssrl.augment import build_augment
from ssrl.config import COMPILES
from ssrl.data import ECGData, open_ptbxl, pretrain_rows, task_labels
from ssrl.data.synth import write_synthetic
from ssrl.models import build_encoder, build_head
from ssrl.ssl import build_method
from ssrl.train.finetuning import Classifier, classifier_loss
from ssrl.train.loop import EpochLoss, Signals, batch_indices, resolve_device
from ssrl.train.precision import cpu_native_bf16, resolve_precision
from ssrl.train.pretraining import method_loss
from ssrl.train.step import LossOf, adamw, compile_step, resolve_compile, step_flops, train_step
from ssrl.tune.spec import load_sweep

FS = 100
TASKS = ("pretrain", "finetune")
# Nominal dense bf16 peaks in TFLOP/s (datasheets, without sparsity), matched in this order on the CUDA
# device's name; used only when the fast path runs at bf16 and no --peak-tflops is given.
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))


def bench_data(records: int, cache_dir: Path) -> ECGData:
    """A synthetic PTB-XL of `records` records under cache_dir, written and cached once."""
    root = cache_dir / f"bench-synthetic-{records}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if not (root / "SYNTHETIC").exists():
            write_synthetic(root, n_records=records, seed=0)
    return open_ptbxl(root, FS, cache_dir)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Seconds per stage of a step (CPU only: on CUDA the stages overlap, only the total counts), and the
    CPU seconds of this process (its threads; not DataLoader workers), which hold up on shared cores."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.spent = device, {}
        _sync(device)
        self.t0 = self.t = time.perf_counter()
        self.cpu0 = time.process_time()

    def lap(self, name: str) -> None:
        """Charge the time since the last lap to `name`."""
        if self.device.type == "cpu":
            now = time.perf_counter()
            self.spent[name] = self.spent.get(name, 0.0) + now - self.t
            self.t = now

    def total(self) -> float:
        """Seconds since the clock was made, after the device is done."""
        _sync(self.device)
        return time.perf_counter() - self.t0

    def cpu(self) -> float:
        """CPU seconds of this process since the clock was made (call after total())."""
        return time.process_time() - self.cpu0


def _model(task: str, args: argparse.Namespace, device: torch.device, precision: str,
           compiled: bool) -> tuple[nn.Module, LossOf, torch.optim.Optimizer]:
    """(module, the loops' step loss: SimCLR of two views or BCE of logits, AdamW); weights fixed by seed 0."""
    torch.manual_seed(0)
    enc = build_encoder(args.encoder, in_leads=12, **({"width": args.width} if args.width else {}))
    if task == "pretrain":
        net: nn.Module = build_method("simclr", enc).to(device)
        loss_of = method_loss(net, device, precision)  # (x1, x2) -> NT-Xent
    else:
        net = Classifier(enc, build_head("linear", enc.out_dim, 5), frozen=False).to(device)
        loss_of = classifier_loss(net, nn.BCEWithLogitsLoss(), device, precision)  # (x, y) -> BCE
    net.train()
    opt = adamw([p for p in net.parameters() if p.requires_grad], 1e-3, 0.01)  # 0.01: torch's default decay
    return net, compile_step(loss_of, device, compiled), opt


def _inputs(task: str, x: torch.Tensor, y: torch.Tensor, augment: Callable, gen: torch.Generator) -> tuple:
    """What the step loss takes for a batch x (B, 12, T): two augmented views, or x and its targets."""
    return (augment(x, gen), augment(x, gen)) if task == "pretrain" else (x, y)


def fast(task: str, data: ECGData, rows: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict:
    """One timed epoch of the fast path: seconds per stage and samples/s."""
    device = resolve_device(args.device)
    _, loss_of, opt = _model(task, args, device, args.precision, args.compiled)
    sig = Signals(data, rows, device)  # (n, 12, T) rows, resident on CUDA
    y_t = torch.as_tensor(y, device=device)
    augment = build_augment("simclr", FS)
    gen, aug_gen = torch.Generator().manual_seed(0), torch.Generator(device=device).manual_seed(1)

    def epoch(n_steps: int) -> Clock:
        clock, losses = Clock(device), EpochLoss(0)
        for idx in list(batch_indices(len(sig), args.batch_size, gen))[:n_steps]:
            x = sig.get(idx)  # (B, 12, T) standardised float32
            clock.lap("batch")
            if task == "pretrain":
                inputs = _inputs(task, x, y_t, augment, aug_gen)  # two augmented views
                clock.lap("augment")
                losses.add(train_step(opt, loss_of, *inputs))
            else:
                losses.add(train_step(opt, loss_of, x, y_t[idx.to(device)]), weight=len(idx))
            clock.lap("model")
        losses.mean()  # read at the end of the epoch, as the loops do
        return clock

    warm = epoch(args.warmup).total()
    return _summary(epoch(args.steps), args, warm)


def naive(task: str, data: ECGData, rows: np.ndarray, y: np.ndarray, args: argparse.Namespace,
          workers: int) -> dict:
    """One timed epoch of the reference-style loop with `workers` DataLoader processes (fp32, eager)."""
    device = resolve_device(args.device)
    _, loss_of, opt = _model(task, args, device, "fp32", False)
    names = [data.record_names[r] for r in rows]
    ds = WFDBDataset(data.root, names, data.mean, data.std, y=y, views=2 if task == "pretrain" else 0, fs=FS)

    def epoch(n_steps: int) -> Clock:
        part = ds if n_steps * args.batch_size >= len(ds) else Subset(ds, range(n_steps * args.batch_size))
        clock = Clock(device)
        loader = DataLoader(part, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                            drop_last=True, generator=torch.Generator().manual_seed(0))
        for batch in loader:
            clock.lap("data")
            train_step(opt, loss_of, *(t.to(device) for t in batch)).item()  # (x1, x2) or (x, y); a sync per step
            clock.lap("model")
        return clock

    warm = epoch(args.warmup).total()
    return _summary(epoch(args.steps), args, warm)


def bound(task: str, data: ECGData, rows: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict:
    """The fast path's model step alone, on one batch already in memory (no data path, no augment)."""
    device = resolve_device(args.device)
    _, loss_of, opt = _model(task, args, device, args.precision, args.compiled)
    sig, gen = Signals(data, rows, device), torch.Generator().manual_seed(2)
    idx = next(batch_indices(len(sig), args.batch_size, None))
    x = sig.get(idx)  # (B, 12, T), made once
    # two fixed views, augmented once outside the clock, or the batch and its targets
    inputs = _inputs(task, x, torch.as_tensor(y[: len(idx)], device=device), build_augment("simclr", FS), gen)

    def epoch(n_steps: int) -> Clock:
        clock, losses = Clock(device), EpochLoss(0)
        for _ in range(n_steps):
            losses.add(train_step(opt, loss_of, *inputs))
            clock.lap("model")
        losses.mean()
        return clock

    warm = epoch(args.warmup).total()
    return _summary(epoch(args.steps), args, warm)


def flops_per_sample(task: str, data: ECGData, args: argparse.Namespace) -> float:
    """FLOPs of one training step (forward and backward) per record, counted at the task's batch size."""
    device = resolve_device(args.device)
    _, loss_of, _ = _model(task, args, device, args.precision, False)  # counted eagerly: the same arithmetic
    x = torch.randn(args.batch_size, 12, data.signals.shape[-1], device=device)  # (B, 12, T)
    inputs = (x, x.flip(0)) if task == "pretrain" else (x, torch.zeros(args.batch_size, 5, device=device))
    return step_flops(loss_of, *inputs) / args.batch_size


def compile_seconds(task: str, data: ECGData, rows: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> float:
    """Seconds of the first compiled step: tracing, compiling forward and backward, and one step."""
    device = resolve_device(args.device)
    _, loss_of, opt = _model(task, args, device, args.precision, True)
    x = Signals(data, rows, device).get(torch.arange(args.batch_size))
    inputs = _inputs(task, x, torch.as_tensor(y[: args.batch_size], device=device), build_augment("simclr", FS),
                     torch.Generator(device=device).manual_seed(3))
    _sync(device)
    t0 = time.perf_counter()
    train_step(opt, loss_of, *inputs).item()
    return time.perf_counter() - t0


def peak_tflops(args: argparse.Namespace, device: torch.device) -> tuple[float | None, str | None]:
    """(the nominal peak the shares are of, where it comes from); (None, None) where none is known."""
    if args.peak_tflops:
        return args.peak_tflops, "--peak-tflops"
    if device.type == "cuda" and args.precision == "bf16":
        name = torch.cuda.get_device_name(device)
        for key, tflops in PEAK_BF16_TFLOPS:
            if key in name:
                return tflops, f"{key} dense bf16, nominal (datasheet)"
    return None, None


def _summary(clock: Clock, args: argparse.Namespace, warm: float) -> dict:
    total = clock.total()
    n = args.steps * args.batch_size
    return {"samples_per_s": n / total, "seconds": total, "warmup_s": warm, "cpu_samples_per_s": n / clock.cpu(),
            "ms_per_step": {k: 1e3 * v / args.steps for k, v in clock.spent.items()} or None}


def _median(runs: list[dict]) -> dict:
    """The run with the median samples/s, with every repeat's samples/s beside it."""
    rates, cpu = [r["samples_per_s"] for r in runs], [r["cpu_samples_per_s"] for r in runs]
    mid = sorted(runs, key=lambda r: r["samples_per_s"])[(len(runs) - 1) // 2]
    return {**mid, "samples_per_s": statistics.median(rates), "repeats": rates,
            "cpu_samples_per_s": statistics.median(cpu), "cpu_repeats": cpu}


def task_rows(data: ECGData, task: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n rows (and superdiagnostic targets) a task's epoch trains on."""
    if task == "pretrain":
        rows = pretrain_rows(data)
        y = np.zeros((len(rows), 5), dtype=np.float32)
    else:
        train = task_labels(data, "superdiagnostic").split("train")
        rows, y = train.rows, train.y.astype(np.float32)
    if len(rows) < n:
        raise SystemExit(f"error: {task} needs {n} records (steps x batch size); raise --records")
    return rows[:n], y[:n]


def task_settings(args: argparse.Namespace, device: torch.device) -> tuple[str, dict[str, argparse.Namespace]]:
    """The scale, and per task the arguments with the width and batch size the sweeps use at that scale."""
    scale = args.scale or ("paper" if device.type == "cuda" else "demo")
    train = {"pretrain": load_sweep("pretrain", scale).train, "finetune": load_sweep("scarcity", scale).train}
    return scale, {task: argparse.Namespace(**{**vars(args), "width": args.width or int(t.get("encoder_width", 0)),
                                              "batch_size": args.batch_size or int(t["batch_size"])})
                   for task, t in train.items()}


def run(args: argparse.Namespace) -> dict:
    """Every task and variant, interleaved `repeats` times; the median per variant."""
    torch.set_num_threads(args.threads)
    data = bench_data(args.records, Path(args.cache_dir))
    device = resolve_device(args.device)
    args.precision = resolve_precision(args.precision, device)
    args.compiled = resolve_compile(args.compile, device)
    scale, per_task = task_settings(args, device)
    out: dict = {"device": str(device), "encoder": args.encoder, "precision": args.precision,
                 "compiled": args.compiled, "cpu": cpu_info()}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    out["peak_tflops"], out["peak_source"] = peak_tflops(args, device)
    for task in args.tasks:
        targs = per_task[task]
        rows, y = task_rows(data, task, max(targs.steps, targs.warmup) * targs.batch_size)
        counted = flops_per_sample(task, data, targs)
        compile_s = compile_seconds(task, data, rows, y, targs) if targs.compiled else None  # before the timed runs
        runs: dict[str, list[dict]] = {}
        variants: list[tuple[str, Callable[..., dict], tuple]] = [
            ("fast", fast, ()), ("bound", bound, ()), *((f"naive_workers{w}", naive, (w,)) for w in args.naive_workers)]
        for r in range(args.repeats):
            for name, measure, extra in variants[r % len(variants):] + variants[:r % len(variants)]:  # rotate order
                runs.setdefault(name, []).append(measure(task, data, rows, y, targs, *extra))
            _log(task, runs)
        res = {k: _median(runs[k]) for k, *_ in variants}
        out[task] = {**_task_summary(res, targs), **_flops_summary(res, counted, out["peak_tflops"]),
                     "compile_s": compile_s}
    out["settings"] = {"scale": scale, "steps": args.steps,
                       "warmup": args.warmup, "repeats": args.repeats, "threads": args.threads,
                       "naive_workers": args.naive_workers, "records": args.records, "compile": args.compile,
                       "compiled": args.compiled,
                       "torch": torch.__version__, "cpu_count": os.cpu_count(),
                       "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                       "load_avg_1m_at_end": round(os.getloadavg()[0], 2)}
    return out


def _task_summary(res: dict[str, dict], targs: argparse.Namespace) -> dict:
    """Fast path, compute bound and best naive loop in samples/s, and the two ratios the targets are set on."""
    fast_s, bound_s = res["fast"]["samples_per_s"], res["bound"]["samples_per_s"]
    best_naive = max((v["samples_per_s"] for k, v in res.items() if k.startswith("naive")), default=float("nan"))
    return {"samples_per_s": fast_s, "bound_samples_per_s": bound_s, "naive_samples_per_s": best_naive,
            "cpu_samples_per_s": res["fast"]["cpu_samples_per_s"],
            "bound_cpu_samples_per_s": res["bound"]["cpu_samples_per_s"],
            "fraction_of_bound": fast_s / bound_s, "speedup": fast_s / best_naive, "precision": targs.precision,
            "naive_precision": "fp32", "width": targs.width or "default", "batch_size": targs.batch_size,
            "variants": res}


def _flops_summary(res: dict[str, dict], flops: float, peak: float | None) -> dict:
    """FLOPs per sample, the TFLOP/s they make at each variant's samples/s, and the fast path's share of peak."""
    for v in res.values():
        v["tflops"] = flops * v["samples_per_s"] / 1e12
    tflops = res["fast"]["tflops"]
    return {"flops_per_sample": flops, "tflops": tflops, "peak_tflops": peak,
            "share_of_peak": tflops / peak if peak else None,
            "step_alone_share_of_peak": res["bound"]["tflops"] / peak if peak else None}  # the "bound" variant


def cpu_info() -> dict:
    """The CPU model, torch's kernel level and whether bf16 is native: printed beside every figure."""
    model = next((ln.split(":", 1)[1].strip() for ln in _read_lines("/proc/cpuinfo") if ln.startswith("model name")),
                 "unknown")
    flags = next((ln.split(":", 1)[1].split() for ln in _read_lines("/proc/cpuinfo") if ln.startswith("flags")), [])
    return {"model": model, "capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_native_bf16(),
            "flags": sorted(f for f in flags if f.startswith(("avx", "amx")))}


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def _log(task: str, runs: dict[str, list[dict]]) -> None:
    last = ", ".join(f"{k} {v[-1]['samples_per_s']:.1f}" for k, v in runs.items())
    print(f"{task}: {last} samples/s (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)


def add_size_args(p: argparse.ArgumentParser) -> None:
    """Encoder, device, scale, width and batch size: the options this benchmark and bench.compile_step share."""
    p.add_argument("--encoder", default="cnn6")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--scale", choices=["demo", "paper"], help="width and batch sizes of the sweeps at this scale "
                   "(default: demo on CPU, paper on CUDA)")
    p.add_argument("--width", type=int, default=0, help="encoder width (default: the scale's)")
    p.add_argument("--batch-size", type=int, default=0, help="batch size of both tasks (default: the scale's)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_args(p)
    p.add_argument("--steps", type=int, default=3, help="timed steps (one epoch of steps x batch records)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="interleaved repeats; the median is reported")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for both paths")
    p.add_argument("--naive-workers", type=int, nargs="*", default=[0, 2],
                   help="DataLoader num_workers of the naive loop to try (none: fast path only)")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--records", type=int, default=1000)
    p.add_argument("--cache-dir", default=os.environ.get("SSRL_CACHE_DIR") or "/tmp/ssrl-bench")
    p.add_argument("--compile", default="auto", choices=list(COMPILES),
                   help="the training setting for the fast path and the step alone: torch.compile forward and loss "
                   "(auto = on CUDA only); the naive loop stays eager")
    p.add_argument("--peak-tflops", type=float, default=0.0,
                   help="nominal peak TFLOP/s for share_of_peak (default: a table of known GPUs at bf16; none on CPU)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="fast path and bound (the naive loop is fp32): auto = bf16 where native")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run and print JSON or a short table."""
    args = parse_args(argv)
    out = run(args)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for task in args.tasks:
        r = out[task]
        share = f", {100 * r['share_of_peak']:.1f} % of peak" if r["share_of_peak"] is not None else ""
        print(f"{task} ({r['precision']}, compiled {out['compiled']}): fast {r['samples_per_s']:.1f} samples/s = "
              f"{r['fraction_of_bound']:.2f} of the step alone {r['bound_samples_per_s']:.1f}; naive (fp32) "
              f"{r['naive_samples_per_s']:.1f} samples/s ({r['speedup']:.1f}x); "
              f"{r['flops_per_sample'] / 1e9:.3f} GFLOP per sample, {r['tflops']:.3f} TFLOP/s{share}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
