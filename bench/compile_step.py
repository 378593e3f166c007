"""Eager against compiled training step in one process, alternated, so both see the same load on shared cores.

    python -m bench.compile_step [--device cpu] [--scale demo] [--precision fp32] [--repeats 8] [--json]

Per task (SimCLR pretraining, fine-tuning) it builds bench.throughput's model twice from seed 0, one with
the loops' step loss as it is and one under `compile_step` (ssrl.train.step), and times:

- the first step of each, in wall and in CPU seconds of this process and the compiler processes it waited
  for (the compiled one traces and compiles forward and backward; with a cold inductor cache, e.g.
  TORCHINDUCTOR_CACHE_DIR=$(mktemp -d), that is the whole compile);
- then `--repeats` rounds of `--steps` steps each on one fixed batch (the step alone: no data path, no
  augmentation), eager and compiled alternated (the order swapped every round), as samples per wall second
  and per CPU second. CPU seconds count this process's threads; with OMP_WAIT_POLICY=PASSIVE (set here,
  as in bench.throughput) idle threads do not spin, so samples per CPU second hold up when other jobs
  share the cores and wall-clock rates swing. The median of the paired compiled/eager ratios is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP, as in bench.throughput

import torch  # noqa: E402

from bench import throughput as tp  # noqa: E402
from ssrl.train.loop import resolve_device  # noqa: E402
from ssrl.train.precision import resolve_precision  # noqa: E402
from ssrl.train.step import train_step  # noqa: E402


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of the child processes it has waited for."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of fn()."""
    w0, c0 = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - w0, cpu_seconds() - c0


def compare(task: str, args: argparse.Namespace, device: torch.device) -> dict:
    """First-step cost and alternated step-alone rates of the eager and the compiled step for one task."""
    data = tp.bench_data(args.records, Path(args.cache_dir))
    rows, y = tp.task_rows(data, task, args.batch_size)
    x = tp.Signals(data, rows, device).get(torch.arange(args.batch_size))  # (B, 12, T)
    inputs = tp._inputs(task, x, torch.as_tensor(y, device=device), tp.build_augment("simclr", tp.FS),
                        torch.Generator(device=device).manual_seed(2))
    steps = {c: tp._model(task, args, device, args.precision, c)[1:] for c in (False, True)}  # (loss_of, opt)
    first = {}
    for c, (loss_of, opt) in steps.items():
        first[c] = _timed(lambda loss_of=loss_of, opt=opt: train_step(opt, loss_of, *inputs).item())
    rates: dict[bool, dict[str, list[float]]] = {c: {"wall": [], "cpu": []} for c in (False, True)}
    n = args.steps * args.batch_size
    for r in range(args.repeats):
        for c in (False, True) if r % 2 == 0 else (True, False):
            loss_of, opt = steps[c]
            wall, cpu = _timed(lambda loss_of=loss_of, opt=opt: [train_step(opt, loss_of, *inputs)
                                                                 for _ in range(args.steps)][-1].item())
            rates[c]["wall"].append(n / wall)
            rates[c]["cpu"].append(n / cpu)
        print(f"{task} round {r + 1}: eager {rates[False]['cpu'][-1]:.1f}, compiled {rates[True]['cpu'][-1]:.1f} "
              f"samples per CPU second (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    out = {"width": args.width or "default", "batch_size": args.batch_size,
           "first_step": {name: {"wall_s": first[c][0], "cpu_s": first[c][1]}
                          for name, c in (("eager", False), ("compiled", True))}}
    for unit in ("wall", "cpu"):
        e, c = rates[False][unit], rates[True][unit]
        out[f"samples_per_{unit}_s"] = {"eager": statistics.median(e), "compiled": statistics.median(c),
                                        "ratio": statistics.median(b / a for a, b in zip(e, c)),
                                        "eager_rounds": e, "compiled_rounds": c}
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's command line (data, scale and sizes as bench.throughput's)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    tp.add_size_args(p)
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"])
    p.add_argument("--steps", type=int, default=5, help="steps per timed round")
    p.add_argument("--repeats", type=int, default=8, help="rounds, eager and compiled alternated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tasks", nargs="+", default=list(tp.TASKS), choices=tp.TASKS)
    p.add_argument("--records", type=int, default=1000)
    p.add_argument("--cache-dir", default=os.environ.get("SSRL_CACHE_DIR") or "/tmp/ssrl-bench")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every task and print JSON or one line per task."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.precision = resolve_precision(args.precision, device)
    scale, per_task = tp.task_settings(args, device)
    out: dict = {"device": str(device), "precision": args.precision, "scale": scale, "cpu": tp.cpu_info(),
                 "torch": torch.__version__, "steps": args.steps, "repeats": args.repeats, "threads": args.threads}
    for task in args.tasks:
        out[task] = compare(task, per_task[task], device)
    out["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for task in args.tasks:
        r = out[task]
        cpu, first = r["samples_per_cpu_s"], r["first_step"]
        print(f"{task}: compiled/eager {cpu['ratio']:.2f} in samples per CPU second ({cpu['eager']:.1f} -> "
              f"{cpu['compiled']:.1f}); first step {first['eager']['cpu_s']:.1f} CPU s eager, "
              f"{first['compiled']['cpu_s']:.1f} CPU s compiled ({first['compiled']['wall_s']:.1f} s wall)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
