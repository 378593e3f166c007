"""A run's results made ready for docs/results: the local data path left out, probabilities checked, nothing overwritten.

    python -m ssrl.report publish runs/fewshot/results.json --out docs/results/fewshot-cpu-full.json

writes ``fewshot-cpu-full.json``, ``fewshot-cpu-full-predictions.npz`` and (when the run drew one)
``fewshot-cpu-full.png``. The source is a sweep's ``results.json`` (its ``predictions.npz`` and ``<sweep>.png``
beside it) or a merged ``C.json`` (``C-predictions.npz`` beside it, no plot). The dataset's ``root``, a path of
the machine that ran the sweep, is published as ``<PTB-XL root>``; every other field is copied as it is. Every
trial is re-scored from the probabilities first (``rescore``): a file whose numbers do not come out of its
probabilities is refused, and so is a destination that exists.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ssrl.report.io import write_bytes_atomic, write_json_atomic
from ssrl.report.rescore import FILE_NAME, compare, predictions_beside, rescore

ROOT = "<PTB-XL root>"  # what a published file says where the data lay


def sources(src: Path, results: dict[str, Any]) -> tuple[Path, Path | None]:
    """The predictions file and the plot (None if the run drew none) that belong to the results file src."""
    if src.name == "results.json":
        plot = src.with_name(f"{results['sweep']}.png")
        return src.with_name(FILE_NAME), plot if plot.exists() else None
    return predictions_beside(src), None


def publishable(results: dict[str, Any]) -> dict[str, Any]:
    """results with the dataset's local path replaced by ROOT."""
    if "root" not in results.get("dataset", {}):
        return results
    return {**results, "dataset": {**results["dataset"], "root": ROOT}}


def publish(src: Path, out: Path) -> list[Path]:
    """Write out, its predictions and its plot from the run's src (see the module docstring); the paths written.
    A ValueError (nothing written) when a destination exists, the predictions are missing, or a trial re-scores
    otherwise than the file says."""
    results = json.loads(src.read_text())
    pred, plot = sources(src, results)
    dests = [out, predictions_beside(out)] + ([out.with_suffix(".png")] if plot else [])
    taken = [str(d) for d in dests if d.exists()]
    if taken:
        raise ValueError(f"{' and '.join(taken)} already there; choose another --out (nothing was overwritten)")
    if not pred.exists():
        raise ValueError(f"{pred} is missing: a published results file goes with the probabilities it was scored from")
    metric, rows = rescore(pred)
    if metric != results["metric"]:
        raise ValueError(f"{pred} holds {metric}, {src} reports {results['metric']}: not that run's predictions")
    bad = compare(rows, results, metric)
    if bad:
        raise ValueError(f"{pred}: {len(bad)} of {len(rows)} trials re-score otherwise than {src} says (first: "
                         f"{bad[0]}); publish the predictions of that run")
    write_bytes_atomic(dests[1], pred.read_bytes())
    if plot:
        write_bytes_atomic(dests[2], plot.read_bytes())
    write_json_atomic(out, publishable(results))  # last: a results file is only there with its evidence
    return dests


def main(argv: list[str] | None = None) -> int:
    """python -m ssrl.report publish RESULTS.json --out docs/results/NAME.json."""
    p = argparse.ArgumentParser(prog="python -m ssrl.report publish", description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="a sweep's results.json, or a merged file")
    p.add_argument("--out", type=Path, required=True, help="the published results file, e.g. docs/results/NAME.json")
    args = p.parse_args(argv)
    try:
        written = publish(args.results, args.out)
    except (OSError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: every trial re-scores from {written[1]}; written {', '.join(str(w) for w in written)}")
    return 0
