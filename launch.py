"""Run an SSRL sweep: `python launch.py --sweep scarcity` (argument parsing only; the work is in ssrl.tune)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from ssrl.kinds import KINDS  # the benchmarks (no torch, no Ray: --help stays fast)

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Short trials that checkpoint every few epochs make Tune snapshot its experiment state often and
# print a multi-line warning each time; on local or object storage that snapshot is cheap here.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Ray's output goes to a log file (or, with --verbose, the console): every line of it, without colour codes.
os.environ.setdefault("RAY_COLOR_PREFIX", "0")

SCALES = {
    "smoke": "CI's end-to-end check of the whole pipeline: tiny synthetic data, 2 seeds, 3 epochs (about a minute)",
    "demo": "the built-in synthetic PTB-XL on a laptop: the whole sweep with its pretraining (minutes on 2 cores)",
    "cpu": "real PTB-XL on a 2-core CPU: cnn6, a short SimCLR, fewer fractions, 3 seeds (about an hour a sweep)",
    "cpu-full": "real PTB-XL on 2 cores, whole-pool pretraining (10 epochs), 4 fractions, 30 epochs (about 3 hours)",
    "paper": "the full protocol: every fraction or condition, searches per group, long pretraining (needs GPUs)",
}
EPILOG = "scales:\n" + "\n".join(f"  {k:<8} {v}" for k, v in SCALES.items()) + """

exit status:
  0    every trial finished
  1    some trial failed or was skipped (its pretraining failed); results are written all the same
  2    bad input (arguments, sweep files, data, out dir, tracking store), found before anything ran
  130  interrupted; the same command with --resume continues
"""


class _Parser(argparse.ArgumentParser):
    """argparse with bad usage reported like every other bad input: one 'error:' line, exit 2."""

    def error(self, message: str) -> NoReturn:
        """Print one line and exit 2 (argparse prints the whole usage first)."""
        self.exit(2, f"error: {message} (see --help)\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of a sweep."""
    p = _Parser(description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", required=True, choices=list(KINDS))
    p.add_argument("--scale", choices=list(SCALES),
                   help="how big a run (listed below); default: paper on real data, demo on synthetic")
    p.add_argument("--data-root", help="PTB-XL folder (default: $SSRL_DATA_ROOT, ./data/PTB-XL, else synthetic)")
    p.add_argument("--sampling-rate", type=int, default=100, choices=[100, 500])
    p.add_argument("--out", default="runs", help="results, state and the default MLflow store (default: runs/)")
    p.add_argument("--storage", help="Ray Tune storage, a folder or s3://... (default: <out>/ray)")
    p.add_argument("--address", help="Ray cluster to join: auto or HOST:PORT (default: a local Ray)")
    p.add_argument("--tracking-uri", help="MLflow store (default: sqlite:///<out>/mlflow.db)")
    p.add_argument("--gpus-per-trial", type=float, help="fractional GPUs pack several trials on one GPU")
    p.add_argument("--cpus-per-trial", type=float)
    p.add_argument("--max-concurrent", type=int)
    p.add_argument("--resume", action="store_true", help="continue the last run of this sweep in --out")
    p.add_argument("--sweeps-dir", help="folder of sweep files (default: sweeps/ of this checkout)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="training precision (default: the sweep file's, auto): auto = bf16 on CUDA and on CPUs "
                        "with native bf16 (AVX512-BF16, AMX), fp32 elsewhere")
    p.add_argument("--verbose", action="store_true",
                   help="Ray's and Tune's own output on the console (default: in <out>/logs/)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (stages, trials, budgets, resources, paths) and exit; starts and writes nothing")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Parse and run; exit 0 when every trial finished, 1 when one failed, 2 on bad input, 130 on Ctrl-C."""
    args = parse_args(argv)
    if not args.verbose:
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # the log file gets every worker line, not "[repeated 9x]"
    from ssrl.errors import USER_ERRORS
    from ssrl.tune.runner import LaunchOptions, run_sweep

    try:
        results = run_sweep(LaunchOptions(**{k.replace("-", "_"): v for k, v in vars(args).items()}))
    except USER_ERRORS as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; run the same command with --resume to continue", file=sys.stderr)
        return 130
    return 1 if results.get("n_failed") else 0


if __name__ == "__main__":
    sys.exit(main())
