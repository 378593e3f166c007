"""A hand-crafted rhythm control: heart rate and RR statistics from R peaks, then logistic regression.

The first thing a cardiologist-engineer would try on rhythm labels, and the bar an SSL encoder has to
clear. R peaks come from `wfdb.processing.xqrs_detect` on the record in mV (lead II, or the next lead
with plausible beats); the classifier sees the same N-per-class subset as the few-shot conditions of that
seed and is judged on the same folds with the same metrics. No epochs: it reports once.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ssrl.config import FinetuneConfig
from ssrl.data import ECGData, open_ptbxl, task_labels
from ssrl.train.loop import Report, seed_everything
from ssrl.train.metrics import singlelabel_metrics, val_score

FEATURES = ("hr_median", "hr_mean", "sdnn_s", "rmssd_s", "rr_cv", "pnn50", "rr_range", "beats_per_s")
LEADS = (1, 0, 10, 5, 9)  # II, I, V5, aVF, V4: leads with tall R waves
_CACHE: dict[tuple[str, int], np.ndarray] = {}  # (data fingerprint, row) -> features, per process


def rr_features(mv: np.ndarray, fs: float) -> np.ndarray:
    """FEATURES of one record (12, T) in mV from its R peaks; NaN where no lead gives 3 plausible beats."""
    # imported here: fine-tuning imports this module, and the GPU machines have no wfdb
    from wfdb import processing

    for lead in LEADS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peaks = processing.xqrs_detect(mv[lead].astype(np.float64), fs, verbose=False)
        if len(peaks) < 3:
            continue
        rr = processing.calc_rr(peaks, fs=fs, rr_units="seconds")  # (beats - 1,)
        if 0.25 <= np.median(rr) <= 2.5:
            break
    else:
        return np.full(len(FEATURES), np.nan)
    d = np.diff(rr)
    return np.array([60.0 / np.median(rr), 60.0 / rr.mean(), rr.std(), np.sqrt(np.mean(d**2)) if len(d) else 0.0,
                     rr.std() / rr.mean(), np.mean(np.abs(d) > 0.05) if len(d) else 0.0,
                     (rr.max() - rr.min()) / np.median(rr), len(peaks) * fs / mv.shape[-1]])


def feature_matrix(data: ECGData, rows: np.ndarray) -> np.ndarray:
    """FEATURES of the given data rows: (n, len(FEATURES)), memoised per process."""
    out = np.empty((len(rows), len(FEATURES)))
    for i, row in enumerate(rows):
        key = (data.fingerprint, int(row))
        if key not in _CACHE:
            _CACHE[key] = rr_features(np.asarray(data.signals[row], dtype=np.float32), data.sampling_rate)
        out[i] = _CACHE[key]
    return out


def hrv_logreg(cfg: FinetuneConfig, report: Report, out_dir: Path | None = None) -> dict:
    """Fit the control on the seed's labelled subset; report validation and test metrics once."""
    from ssrl.train.finetuning import classes_used, save_predictions, select_subset  # as every condition

    seed_everything(cfg.seed)
    data = open_ptbxl(cfg.data_root, cfg.sampling_rate, cfg.cache_dir or None)
    labels = task_labels(data, cfg.task)
    if labels.multilabel:
        raise ValueError(f"hrv_logreg classifies single-label rhythm tasks, not {cfg.task!r}")
    train_all, val, test = (labels.split(s) for s in ("train", "val", "test"))
    pick = select_subset(train_all, cfg)
    model = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                          LogisticRegression(max_iter=5000, random_state=cfg.seed))
    x_train, y_train = feature_matrix(data, train_all.rows[pick]), train_all.y[pick]
    model.fit(x_train, y_train)
    p_val, p_test = (_proba(model, feature_matrix(data, s.rows), len(labels.classes)) for s in (val, test))
    score = val_score(val.y, p_val, False)
    train_loss = log_loss(y_train, _proba(model, x_train, len(labels.classes)), labels=range(len(labels.classes)))
    report({"epoch": 1, "train_loss": train_loss, "val_score": score, "val_classes_used": classes_used(p_val),
            "precision": "fp32"})
    majority = int(np.bincount(train_all.y, minlength=len(labels.classes)).argmax())
    final = singlelabel_metrics(test.y, p_test, labels.classes, majority)
    final.update(val_score=score, test_single_class=int(classes_used(p_test) == 1), epoch=1, best_epoch=1,
                 best_val_score=score, epochs_run=1, collapsed=None, n_labelled=len(pick), precision="fp32",
                 bn_stats="none", done=True)
    save_predictions(out_dir, cfg, labels, data, p_test)
    report(final)
    return final


def _proba(model: object, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities (n, n_classes), zero for classes the fit never saw."""
    out = np.zeros((len(x), n_classes))
    out[:, model.classes_] = model.predict_proba(x)
    return out
