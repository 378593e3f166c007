"""Does the heart-rate/RR detector agree with physiology? Per-class medians of the rhythm features on a fold.

    python -m bench.physiology --data-root DIR [--fold test] [--sampling-rate 100]

Prints, for each rhythm5 class of the fold, how many records it has, how many gave no features (fewer than
3 voted beats) and the median of every feature (ssrl.data.rpeaks). Expected: SBRAD under 60 bpm, STACH over
100, SR 60-100 with a regular RR (RR-CV a few per cent), AFIB irregular (RR-CV well over 0.12).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ssrl.data import open_ptbxl, task_labels
from ssrl.data.rpeaks import FEATURES, VERSION, feature_table


def main(argv: list[str] | None = None) -> int:
    """Print the per-class medians as a markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--fold", default="test", choices=["train", "val", "test"])
    p.add_argument("--sampling-rate", type=int, default=100, choices=[100, 500])
    args = p.parse_args(argv)
    data = open_ptbxl(args.data_root, args.sampling_rate)
    labels = task_labels(data, "rhythm5")
    part = labels.split(args.fold)
    t0 = time.perf_counter()
    x = feature_table(data, part.rows)
    print(f"{args.fold} fold, {len(part.rows)} records at {args.sampling_rate} Hz, detector {VERSION}, "
          f"{time.perf_counter() - t0:.0f} s (cached rows are read, not recomputed)\n")
    print("| class | records | no beats | " + " | ".join(FEATURES) + " |")
    print("|---" * (len(FEATURES) + 3) + "|")
    for i, c in enumerate(labels.classes):
        f = x[part.y == i]
        missing = int(np.isnan(f[:, 0]).sum())
        meds = np.nanmedian(f, axis=0) if len(f) > missing else np.full(len(FEATURES), np.nan)
        print(f"| {c} | {len(f)} | {missing} | " + " | ".join(f"{m:.3f}" for m in meds) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
