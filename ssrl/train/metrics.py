"""Test and validation metrics through sklearn.metrics; thresholds come from the val fold."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_recall_curve,
    roc_auc_score,
)


def macro_auroc(y: np.ndarray, prob: np.ndarray) -> float:
    """Macro AUROC over the classes that have both labels present: (n, C), (n, C) -> float."""
    keep = [c for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
    if not keep:
        return float("nan")
    return float(roc_auc_score(y[:, keep], prob[:, keep], average="macro"))


def choose_thresholds(y_val: np.ndarray, prob_val: np.ndarray) -> np.ndarray:
    """Per-class thresholds that maximise F1 on the validation fold: (n, C) -> (C,)."""
    out = np.full(y_val.shape[1], 0.5)
    for c in range(y_val.shape[1]):
        if y_val[:, c].sum() == 0:
            continue
        precision, recall, thr = precision_recall_curve(y_val[:, c], prob_val[:, c])
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        out[c] = thr[int(np.argmax(f1[:-1]))] if len(thr) else 0.5
    return out


def multilabel_metrics(
    y: np.ndarray, prob: np.ndarray, thresholds: np.ndarray, classes: tuple[str, ...], prefix: str = "test_"
) -> dict[str, float]:
    """Macro AUROC (headline), per-class AUROC and macro F1 at the given thresholds."""
    out = {f"{prefix}macro_auroc": macro_auroc(y, prob)}
    for c, name in enumerate(classes):
        ok = 0 < y[:, c].sum() < len(y)
        out[f"{prefix}auroc_{name}"] = float(roc_auc_score(y[:, c], prob[:, c])) if ok else float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out[f"{prefix}macro_f1"] = float(f1_score(y, prob >= thresholds, average="macro", zero_division=0))
    return out


def singlelabel_metrics(
    y: np.ndarray, prob: np.ndarray, classes: tuple[str, ...], majority: int, prefix: str = "test_"
) -> dict[str, float]:
    """Macro F1 (headline), accuracy, balanced accuracy, per-class F1, and the majority baseline."""
    labels = list(range(len(classes)))
    pred = prob.argmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {
            f"{prefix}macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
            f"{prefix}accuracy": float(accuracy_score(y, pred)),
            f"{prefix}balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            f"{prefix}trivial_macro_f1": float(
                f1_score(y, np.full_like(y, majority), labels=labels, average="macro", zero_division=0)
            ),
        }
        per_class = f1_score(y, pred, labels=labels, average=None, zero_division=0)
    out.update({f"{prefix}f1_{name}": float(v) for name, v in zip(classes, per_class)})
    return out


def val_score(y: np.ndarray, prob: np.ndarray, multilabel: bool) -> float:
    """The early-stopping metric: macro AUROC (multi-label) or macro F1 (single-label)."""
    if multilabel:
        return macro_auroc(y, prob)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(f1_score(y, prob.argmax(1), labels=list(range(prob.shape[1])), average="macro", zero_division=0))
