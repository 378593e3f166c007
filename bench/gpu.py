"""A GPU check that fits a short lent slot: the CUDA code paths, throughput, and launch.py's sweep as a user runs it.

    python -m bench.gpu [--json] [--device auto|cuda|cpu] [--records 21799] [--data-root DIR] [--tiny]
                        [--sweep scarcity] [--scale paper] [--gpus-per-trial F] [--deadline-s 540]
                        [--stages data,checks,throughput,sweep] [--out FILE]

Stages, in order: `data` (a synthetic PTB-XL of --records records written by ssrl.data.synth, or PTB-XL
folders carried to --data-root, and its signal cache written without wfdb: the file launch.py's
open_ptbxl then maps; bench.gpu_data), `checks` (the GPU code paths: bench.gpu_checks), `throughput`
(bench.throughput: the loops' fast path, its compute bound and the naive loop) and `sweep`
(`launch.py --sweep SWEEP --scale SCALE` on that data, with Ray Tune, Optuna and MLflow, stopped cleanly
at --deadline-s; what the run wrote, read back: bench.gpu_sweep). The sweep stage needs ray, mlflow,
optuna and wfdb (the offline bundle); without them it fails in one line and the other stages run.
One JSON: the device; per stage its wall time, GPU utilisation and memory; samples/s; the sweep's
stage seconds, trials per stage and counts from results.json. Nothing is estimated. `--tiny` runs the
sweep files' smoke scale and tiny throughput settings (the CPU tests run it).
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
from typing import NoReturn

from bench.gpu_env import GpuMonitor, allow_missing_wfdb, device_info, loaded_optional

STAGES = ("data", "checks", "throughput", "sweep")
DEADLINE_S = 540  # the sweep is stopped this long after the start: the JSON is out before a 600 s command limit
FULL_RECORDS = 21799


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


def _stage(name: str, args: argparse.Namespace, state: dict) -> dict:
    """Run one stage; the data stage leaves the opened data in state["ecg"] for the others."""
    from bench import gpu_stages  # after allow_missing_wfdb (main): it imports ssrl.data

    if name == "data":
        state["ecg"], res = gpu_stages.data(args)
        return res
    if name == "sweep":
        root = state["ecg"].root if state.get("ecg") is not None else args.data_root
        if root is None:
            raise RuntimeError("needs the data stage first, or --data-root")
        return gpu_stages.sweep(args, Path(root), state["work_dir"], state["t_start"] + args.deadline_s)
    if state.get("ecg") is None:
        raise RuntimeError("needs the data stage first")
    if name == "checks":
        return gpu_stages.checks(args, state["ecg"], state["work_dir"])
    return gpu_stages.throughput(args, state["ecg"])


def run(args: argparse.Namespace) -> dict:
    """Every requested stage in order; the JSON report (also written to --out after each stage)."""
    from bench.gpu_sweep import StageError

    out: dict = {"device": device_info(args.device), "settings": {k: v for k, v in vars(args).items() if k != "json"},
                 "wfdb": allow_missing_wfdb() or "installed", "stages": {}}
    state = {"t_start": time.time(), "work_dir": Path(args.work_dir or tempfile.mkdtemp(prefix="ssrl-gpu-bench-"))}
    with GpuMonitor(args.device) as monitor:
        for name in args.stages:
            t0 = time.time()
            out["stages"][name] = {"running": True}  # a bench killed mid-stage still says where it was
            _save(out, args.out)
            _parent_peak_mib(args.device, reset=True)
            try:
                res = _stage(name, args, state)
            except StageError as e:
                res = {"error": str(e)}
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


def _sweep_summary(sw: dict) -> dict | None:
    """The sweep's headline: cut or not, its wall, stage seconds, trials finished of planned, results' counts."""
    if not sw or ("error" in sw and "exit_code" not in sw):
        return None
    res = sw.get("results") or {}
    stages = sw.get("stages", {})
    return {"scale": sw.get("scale"), "cut": sw.get("cut"), "exit_code": sw.get("exit_code"),
            "launch_wall_s": sw.get("launch_wall_s"),
            "stage_seconds": sw.get("stage_seconds"), "outside_stages_s": sw.get("outside_stages_s"),
            "trials_done_of_planned": {s: f"{r.get('done', 0)}/{r.get('planned')}" for s, r in stages.items()},
            "n_runs": res.get("n_runs"), "n_failed": res.get("n_failed"),
            "pretrain_samples_per_s": (stages.get("pretrain", {}).get("samples_per_s") or {}).get("median")}


def _summary(out: dict, wall_s: float) -> dict:
    """Totals, the headline numbers and whether anything failed (a cut sweep is not a failure)."""
    st = out["stages"]
    chk, tp, sw = st.get("checks", {}), st.get("throughput", {}), st.get("sweep", {})
    failed = [s for s, r in st.items() if "error" in r] + list(chk.get("failed", {}))
    if (sw.get("results") or {}).get("n_failed") and "sweep" not in failed:
        failed.append("sweep")
    return {"wall_s": round(wall_s, 1), "loaded_optional_modules": loaded_optional(), "failed": failed,
            "summary": {"stage_wall_s": {s: r.get("wall_s") for s, r in st.items()},
                        "checks_passed": len(chk.get("passed", [])), "checks_failed": len(chk.get("failed", {})),
                        "pretrain_samples_per_s": tp.get("pretrain", {}).get("samples_per_s"),
                        "finetune_samples_per_s": tp.get("finetune", {}).get("samples_per_s"),
                        "sweep": _sweep_summary(sw),
                        "gpu_memory_used_max_mib": max((r["gpu"]["memory_used_max_mib"] for r in st.values()
                                                        if r.get("gpu")), default=None)}}


class _Parser(argparse.ArgumentParser):
    """argparse with bad usage in one 'error:' line and exit 2, as launch.py reports it."""

    def error(self, message: str) -> NoReturn:
        """Print one line and exit 2 (argparse prints the whole usage first)."""
        self.exit(2, f"error: {message} (see --help)\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked; --device auto resolves to cuda when there is one."""
    from ssrl.kinds import KINDS
    from ssrl.tune.spec import SCALES, SweepError, load_sweep

    p = _Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    p.add_argument("--records", type=int, help=f"synthetic records (default {FULL_RECORDS}; with --tiny the "
                                               "smoke scale's)")
    p.add_argument("--data-root", help="carried PTB-XL folders to use instead of synthetic data")
    p.add_argument("--tiny", action="store_true", help="the sweep files' smoke scale (the CPU tests run this)")
    p.add_argument("--sweep", default="scarcity", choices=list(KINDS), help="the sweep launch.py runs")
    p.add_argument("--scale", choices=list(SCALES), help="its scale (default paper; smoke with --tiny)")
    p.add_argument("--gpus-per-trial", type=float, help="launch.py's --gpus-per-trial (default: the sweep file's)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="default: auto (the sweep files')")
    p.add_argument("--deadline-s", type=float, default=DEADLINE_S,
                   help="seconds from the start after which the sweep is stopped as Ctrl-C stops it "
                        "(a lent machine runs one command for at most 600 s)")
    p.add_argument("--cache-dir", default=os.environ.get("SSRL_CACHE_DIR") or "/tmp/ssrl-bench",
                   help="synthetic data and signal caches (launch.py gets it as $SSRL_CACHE_DIR)")
    p.add_argument("--work-dir", help="where checks and the sweep write (default: a temporary folder, removed)")
    p.add_argument("--out", help="also write the JSON here, after every stage (the sweep's records beside it)")
    p.add_argument("--json", action="store_true", help="print the whole JSON (default: the summary)")
    args = p.parse_args(argv)
    args.stages = [s for s in args.stages.split(",") if s]
    bad = sorted(set(args.stages) - set(STAGES))
    if bad:
        p.error(f"--stages: unknown stage(s) {', '.join(bad)}; use {', '.join(STAGES)}")
    if args.deadline_s <= 0:
        p.error(f"--deadline-s {args.deadline_s:g}: give the seconds after the start at which the sweep stops (> 0)")
    if args.gpus_per_trial is not None and args.gpus_per_trial <= 0:
        p.error(f"--gpus-per-trial {args.gpus_per_trial:g}: give a share of a GPU > 0, e.g. 0.25")
    if args.records is not None and args.records < 1:
        p.error(f"--records {args.records}: give the number of synthetic records to write (>= 1)")
    args.scale = args.scale or ("smoke" if args.tiny else "paper")
    try:
        spec = load_sweep(args.sweep, args.scale)
    except SweepError as e:
        p.error(f"--sweep {args.sweep} --scale {args.scale}: {e}")
    args.records = args.records or (spec.data_records if args.tiny else FULL_RECORDS)
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def main(argv: list[str] | None = None) -> int:
    """Run, print the JSON (or its summary); exit 1 when a stage, check or sweep trial failed."""
    allow_missing_wfdb()
    args = parse_args(argv)
    out = run(args)
    print(json.dumps(_clean(out if args.json else {k: out[k] for k in ("summary", "failed", "wfdb")}), indent=1))
    return 1 if out["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
