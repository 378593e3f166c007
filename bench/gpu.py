"""A GPU check that fits a short lent slot: the core alone (no Ray, MLflow or Optuna; wfdb optional).

    python -m bench.gpu --json [--device auto|cuda|cpu] [--records 21799] [--data-root DIR] [--tiny]
                        [--stages data,checks,throughput,scarcity] [--k N] [--out FILE]

Stages, in order: `data` (a synthetic PTB-XL of --records records, or PTB-XL folders carried to
--data-root, cached without wfdb: bench.gpu_data), `checks` (the GPU code paths: bench.gpu_checks),
`throughput` (bench.throughput: the loops' fast path, its compute bound and the naive loop) and
`scarcity` (sweeps/scarcity.yaml's paper workload with its SimCLR pretraining, trials packed k per
device as separate processes, k from a short probe: bench.gpu_plan, bench.gpu_pack). One JSON:
the device, wall time, GPU utilisation and peak memory per stage, samples/s, and the whole paper
sweep's estimated time. `--tiny` runs the sweep files' smoke scale and tiny throughput settings
(the CPU test runs it). docs/RESULTS.md (GPU) says what to carry to a lent machine and how to run it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.gpu_env import GpuMonitor, allow_missing_wfdb, device_info, loaded_optional

STAGES = ("data", "checks", "throughput", "scarcity")
TARGET_S = 480  # checks + throughput + scarcity (its probe included) on one H200
DEADLINE_S = 540  # the JSON is out before a 600 s command limit, the data stage (~30 s) included
FULL_RECORDS, TINY_RECORDS = 21799, 300


def _clean(x: object) -> object:
    """NaN and infinities as null, so the output is strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _save(out: dict, path: str | None) -> None:
    """Write the JSON so far (after every stage: a cut-short run still leaves its finished stages)."""
    if path:
        tmp = Path(f"{path}.tmp")
        tmp.write_text(json.dumps(_clean(out), indent=1))
        os.replace(tmp, path)


def _parent_peak_mib(device: str, reset: bool = False) -> float | None:
    """This process's peak CUDA memory since the last reset (None on CPU)."""
    import torch

    if not device.startswith("cuda"):
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats(torch.device(device))
    return round(torch.cuda.max_memory_reserved(torch.device(device)) / 2**20, 1)


def _stage(name: str, args: argparse.Namespace, state: dict, monitor: GpuMonitor) -> dict:
    """Run one stage; the data stage leaves the opened data in state["ecg"] for the others."""
    from bench import gpu_stages  # after allow_missing_wfdb (main): it imports ssrl.data

    if name == "data":
        state["ecg"], res = gpu_stages.data(args)
        return res
    if state.get("ecg") is None:
        raise RuntimeError("needs the data stage first")
    if name == "checks":
        return gpu_stages.checks(args, state["ecg"], state["work_dir"])
    if name == "throughput":
        return gpu_stages.throughput(args, state["ecg"])
    return gpu_stages.scarcity(args, state["ecg"], state["work_dir"], monitor, state["t_start"] + args.deadline_s)


def run(args: argparse.Namespace) -> dict:
    """Every requested stage in order; the JSON report (also written to --out after each stage)."""
    out: dict = {"device": device_info(args.device), "settings": {k: v for k, v in vars(args).items() if k != "json"},
                 "wfdb": allow_missing_wfdb() or "installed", "stages": {}}
    state = {"t_start": time.time(), "work_dir": Path(args.work_dir or tempfile.mkdtemp(prefix="ssrl-gpu-bench-"))}
    with GpuMonitor(args.device) as monitor:
        for name in args.stages:
            t0 = time.time()
            _parent_peak_mib(args.device, reset=True)
            try:
                res = _stage(name, args, state, monitor)
            except Exception as e:  # noqa: BLE001 - a failed stage is reported and the next one runs
                res = {"error": f"{type(e).__name__}: {e}"[:500]}
            t1 = time.time()
            out["stages"][name] = {"wall_s": round(t1 - t0, 1), "gpu": monitor.window(t0, t1),
                                   "parent_peak_mib": _parent_peak_mib(args.device), **res}
            _save(out, args.out)
    if not args.work_dir:
        shutil.rmtree(state["work_dir"], ignore_errors=True)
    out.update(_summary(out, time.time() - state["t_start"]))
    _save(out, args.out)
    return out


def _summary(out: dict, wall_s: float) -> dict:
    """Totals, the target, the headline numbers and whether anything failed."""
    st = out["stages"]
    timed = sum(st[s]["wall_s"] for s in ("checks", "throughput", "scarcity") if s in st)
    chk, tp, sc = st.get("checks", {}), st.get("throughput", {}), st.get("scarcity", {})
    failed = [s for s, r in st.items() if "error" in r] + list(chk.get("failed", {})) + list(sc.get("failed", {}))
    return {"wall_s": round(wall_s, 1), "timed_s": round(timed, 1), "target_s": TARGET_S,
            "within_target": timed <= TARGET_S and sc.get("complete", True),
            "loaded_optional_modules": loaded_optional(), "failed": failed,
            "summary": {"stage_wall_s": {s: r["wall_s"] for s, r in st.items()},
                        "checks_passed": len(chk.get("passed", [])), "checks_failed": len(chk.get("failed", {})),
                        "pretrain_samples_per_s": tp.get("pretrain", {}).get("samples_per_s"),
                        "finetune_samples_per_s": tp.get("finetune", {}).get("samples_per_s"),
                        "k": sc.get("k"), "scarcity_s": sc.get("wall_s"),
                        "scarcity_gpu_util_mean_pct": (sc.get("packed_gpu") or {}).get("util_mean_pct"),
                        "gpu_memory_used_max_mib": max((r["gpu"]["memory_used_max_mib"] for r in st.values()
                                                        if r.get("gpu")), default=None),
                        "paper_sweep_s": sc.get("paper_sweep", {}).get("total_s")}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; --device auto resolves to cuda when there is one."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    p.add_argument("--records", type=int, help=f"synthetic records (default {FULL_RECORDS}; {TINY_RECORDS} with --tiny)")
    p.add_argument("--data-root", help="carried PTB-XL folders to use instead of synthetic data")
    p.add_argument("--tiny", action="store_true", help="the sweep files' smoke scale (CI runs this on CPU)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--k", type=int, default=0, help="trials per device (default: chosen by a probe)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--deadline-s", type=float, default=DEADLINE_S,
                   help="seconds from the start after which running trials stop at their next epoch end "
                        "(a lent machine runs one command for at most 600 s)")
    p.add_argument("--cache-dir", default=os.environ.get("SSRL_CACHE_DIR") or "/tmp/ssrl-bench")
    p.add_argument("--work-dir", help="where trials write (default: a temporary folder, removed)")
    p.add_argument("--out", help="also write the JSON here, after every stage")
    p.add_argument("--json", action="store_true", help="print the whole JSON (default: the summary)")
    args = p.parse_args(argv)
    args.stages = [s for s in args.stages.split(",") if s]
    bad = sorted(set(args.stages) - set(STAGES))
    if bad:
        p.error(f"unknown stage(s) {', '.join(bad)}; use {', '.join(STAGES)}")
    args.records = args.records or (TINY_RECORDS if args.tiny else FULL_RECORDS)
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def main(argv: list[str] | None = None) -> int:
    """Run, print the JSON (or its summary); exit 1 when a stage, check or trial failed."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: k processes share cores
    allow_missing_wfdb()
    args = parse_args(argv)
    out = run(args)
    print(json.dumps(_clean(out if args.json else {k: out[k] for k in ("summary", "failed", "wfdb")}), indent=1))
    return 1 if out["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
