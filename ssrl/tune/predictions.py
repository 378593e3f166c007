"""The test probabilities of a sweep's evaluation trials, gathered from their checkpoints into one file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ssrl.report.rescore import FILE_NAME, META, write_predictions


def gather(grid: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """predictions.npz of every finished trial's last checkpoint, with its results row's keys (grid order)."""
    out = []
    for result, row in zip(grid, rows):
        if row.get("status") != "ok" or result.checkpoint is None:
            continue
        with result.checkpoint.as_directory() as folder:
            path = Path(folder) / "predictions.npz"
            if not path.exists():
                continue
            with np.load(path, allow_pickle=False) as z:
                out.append({**{k: row.get(k) for k in META}, "prob": z["prob"], "y": z["y"], "ecg_id": z["ecg_id"],
                            "classes": z["classes"]})
    return out


def write(grid: Any, rows: list[dict[str, Any]], metric: str, out_dir: Path) -> Path | None:
    """<out_dir>/predictions.npz from the trials' checkpoints; None when no trial left probabilities."""
    return write_predictions(out_dir / FILE_NAME, metric, gather(grid, rows))
