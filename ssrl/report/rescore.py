"""A sweep's test-fold probabilities in one file, and every cell re-scored from them.

`<out>/<sweep>/predictions.npz` (written at the end of every scarcity and fewshot sweep) holds, per
finished evaluation trial, its track, method, fraction or N, BatchNorm protocol, seed and how many labelled
records it trained on (``n_labelled_used``), and its test-fold class probabilities (float32, as the trial scored
them) in one `ecg_id` order shared by all trials, with the labels.
Anyone can recompute the headline metric of every cell without re-running:

    python -m ssrl.report rescore docs/results/fewshot-ptbxl-predictions.npz --results docs/results/fewshot-ptbxl.json

The headline metrics need only the test fold: macro AUROC (scarcity) and argmax macro-F1
(fewshot). Metrics that need the validation fold (macro-F1 at per-class thresholds chosen there)
are not re-scored. The probabilities stay float32: float16 ties moved a smoke sweep's AUROC by up to
0.003, and an exact re-score is a check that cannot be argued with.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ssrl.kinds import kind_of_row
from ssrl.report.io import write_bytes_atomic

FILE_NAME = "predictions.npz"
META = ("track", "method", "fraction", "n_labelled", "bn_stats", "seed", "n_labelled_used")
TOLERANCE = 1e-9  # |re-scored - reported|, per seed: the same probabilities through the same sklearn call


def predictions_beside(results: Path) -> Path:
    """Where a published or merged results file NAME.json keeps its probabilities: NAME-predictions.npz beside it."""
    return results.with_name(results.stem + "-predictions.npz")


def write_predictions(path: Path, metric: str, trials: list[dict[str, Any]]) -> Path | None:
    """One compressed file of every trial's test probabilities; None when no trial has any.

    Each trial: the META keys and `ecg_id` (n,), `y` (n,) or (n, C), `prob` (n, C), `classes`.
    Trials are put in the first trial's ecg_id order (the test fold is the same for all of them).
    """
    if not trials:
        return None
    order = np.asarray(trials[0]["ecg_id"])
    probs = []
    for t in trials:
        where = {int(e): i for i, e in enumerate(np.asarray(t["ecg_id"]))}
        if set(where) != set(order.tolist()):
            raise ValueError(f"trial {t['track']} seed {t['seed']}: its test records differ from the first trial's")
        probs.append(np.asarray(t["prob"])[[where[int(e)] for e in order]])
    first = np.asarray(trials[0]["y"])
    meta = {k: [t.get(k) for t in trials] for k in META}
    buf = io.BytesIO()
    np.savez_compressed(buf, prob=np.stack(probs).astype(np.float32), ecg_id=order, y=first,
                        classes=np.asarray(trials[0]["classes"]), metric=np.asarray(metric),
                        meta=np.asarray(json.dumps(meta)))
    return write_bytes_atomic(path, buf.getvalue())


def read_meta(z: Any) -> dict[str, list]:
    """A predictions file's per-trial META lists; a file written before ``n_labelled_used`` holds that realised
    count as ``n_labelled``, which stays only where it is the cell's key (a trial without a fraction)."""
    meta = json.loads(str(z["meta"]))
    if "n_labelled_used" not in meta:
        meta["n_labelled_used"] = list(meta["n_labelled"])
        meta["n_labelled"] = [n if f is None else None for n, f in zip(meta["n_labelled"], meta["fraction"])]
    return meta


def _score(metric: str, y: np.ndarray, prob: np.ndarray) -> float:
    """The headline metric of one trial from its test probabilities."""
    if metric == "test_macro_auroc":
        from ssrl.train.metrics import macro_auroc  # sklearn; the trial computed it the same way

        return macro_auroc(y, prob)
    if metric == "test_macro_f1":
        from sklearn.metrics import f1_score

        n = prob.shape[1]
        return float(f1_score(y, prob.argmax(1), labels=list(range(n)), average="macro", zero_division=0))
    raise ValueError(f"{metric} cannot be re-scored from test probabilities alone")


def rescore(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """(metric, one row per trial with the META keys and the re-scored metric)."""
    with np.load(path, allow_pickle=False) as z:
        metric, meta = str(z["metric"]), read_meta(z)
        y, prob = z["y"], z["prob"]
    rows = []
    for i in range(len(prob)):
        row = {k: meta[k][i] for k in META}
        row[metric] = _score(metric, y, prob[i])
        rows.append(row)
    return metric, rows


def compare(rows: list[dict], results: dict, metric: str) -> list[str]:
    """Disagreements (one line each) between re-scored rows and results.json's per-seed values."""
    reported = {}
    for cell in results["cells"]:
        for r in cell.get("per_seed", []):
            reported[_key(cell, r["seed"])] = r.get(metric)
    bad, seen = [], set()
    for row in rows:
        key = _key(row, row["seed"])
        seen.add(key)
        want = reported.get(key)
        if want is None or not math.isclose(row[metric], want, abs_tol=TOLERANCE):
            bad.append(f"{key}: re-scored {row[metric]:.4f}, results.json {want}")
    bad += [f"{k}: in results.json, not in the predictions file" for k in reported if k not in seen]
    return bad


def _key(d: dict, seed: Any) -> tuple:
    """A seed's place: its cell's keys (its kind's cell_keys) and the seed."""
    return (*(d.get(k) for k in kind_of_row(d).cell_keys), int(seed))


def main(argv: list[str] | None = None) -> int:
    """python -m ssrl.report rescore FILE [--results results.json]: print the cells; check them."""
    from ssrl.report.stats import holm_account
    from ssrl.report.tables import results_markdown

    p = argparse.ArgumentParser(prog="python -m ssrl.report rescore", description=__doc__.splitlines()[0])
    p.add_argument("file", type=Path, help="a sweep's predictions file")
    p.add_argument("--results", type=Path, help="that sweep's results.json: check every seed's value against it")
    args = p.parse_args(argv)
    try:
        metric, rows = rescore(args.file)
    except (OSError, KeyError, ValueError) as e:
        print(f"error: {args.file}: not a predictions file ({e}); give <out>/<sweep>/{FILE_NAME}", file=sys.stderr)
        return 2
    kind = kind_of_row(rows[0]) if rows else None
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"]))  # in the sweep's order
    cells = kind.cells(rows, metric, methods) if kind else []
    print(results_markdown({"sweep": f"re-scored from {args.file.name}", "metric": metric, "cells": cells,
                            "multiplicity": holm_account(cells)}), end="")
    if args.results is None:
        return 0
    bad = compare(rows, json.loads(args.results.read_text()), metric)
    for line in bad:
        print(f"MISMATCH {line}")
    print(f"{len(rows)} trials re-scored; {len(bad)} disagree with {args.results} beyond {TOLERANCE}")
    return 1 if bad else 0
