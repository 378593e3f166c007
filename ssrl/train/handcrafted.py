"""Rhythm controls: heart rate and RR regularity, alone, as a clinical rule, or joined to an encoder's embedding.

Rhythm labels are largely heart rate and RR regularity, so these are the bar a deep model has to clear. The
features are ssrl.data.rpeaks's (neurokit2 R peaks on five leads, a majority vote per beat). Each control is
judged on the same folds with the same metrics as the few-shot conditions, and reports once (no epochs):

- ``hrv_logreg``: logistic regression on the features, fitted on the seed's N-per-class subset (its L2 strength
  chosen on the validation fold, like every condition's epoch);
- ``hr_rule``: textbook bounds and no labels at all (``rule_predict``);
- ``hybrid`` / ``hybrid_random``: the features joined to a frozen encoder's embedding (the pretrained encoder,
  or a random one of the same architecture as its control), logistic regression on the same subset: whether
  the encoder adds anything to what heart rate and RR regularity already give.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ssrl.config import FinetuneConfig
from ssrl.data import ECGData, open_ptbxl, task_labels
from ssrl.data.rpeaks import FEATURES, feature_table
from ssrl.train.common import build_track_encoder, classes_used, save_predictions, select_subset
from ssrl.train.embed import Features
from ssrl.train.loop import Report, Signals, resolve_device, seed_everything
from ssrl.train.metrics import singlelabel_metrics, val_score

# hr_rule's bounds, fixed from the literature (never fitted on any fold):
RATE_BPM = (60.0, 100.0)  # sinus bradycardia below 60 bpm, sinus tachycardia above 100 bpm
AF_RMSSD_REL = 0.10  # RMSSD / mean RR above this: irregularly irregular, atrial fibrillation (nRMSSD, Dash 2009)
SARRH_RANGE_S = 0.12  # RR (P-P) intervals varying by more than 0.12 s: sinus arrhythmia (the textbook criterion)
# The logistic regressions' inverse L2 strength, chosen per run on the validation fold: with 70 labels and a
# 256-wide embedding beside 5 features, one fixed C either starves the features or overfits the embedding.
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)


def rule_predict(x: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    """hr_rule's class index per record from FEATURES (n, F): atrial fibrillation first (irregularly irregular
    RR), then the rate bounds, then sinus arrhythmia, else sinus rhythm (also where no beats were found)."""
    f = {name: x[:, i] for i, name in enumerate(FEATURES)}
    with np.errstate(invalid="ignore"):  # NaN compares False: no beats found reads as sinus rhythm
        labels = np.select([f["rmssd_rel"] > AF_RMSSD_REL, f["hr_bpm"] < RATE_BPM[0], f["hr_bpm"] > RATE_BPM[1],
                            f["rr_range_s"] > SARRH_RANGE_S], ["AFIB", "SBRAD", "STACH", "SARRH"], "SR")
    missing = sorted({"SR", "AFIB", "SBRAD", "STACH", "SARRH"} - set(classes))
    if missing:
        raise ValueError(f"hr_rule predicts the rhythm5 classes; this task lacks {', '.join(missing)}")
    return np.array([classes.index(c) for c in labels], dtype=np.int64)


def fit_control(cfg: FinetuneConfig, report: Report, out_dir: Path | None = None) -> dict:
    """Fit (or apply) the track's control on the seed's labelled subset; report validation and test once."""
    seed_everything(cfg.seed)  # the random encoder of hybrid_random, the solver's seed
    data = open_ptbxl(cfg.data_root, cfg.sampling_rate, cfg.cache_dir or None)
    labels = task_labels(data, cfg.task)
    if labels.multilabel:
        raise ValueError(f"{cfg.track} classifies single-label rhythm tasks, not {cfg.task!r}")
    train_all, val, test = (labels.split(s) for s in ("train", "val", "test"))
    n_classes, row = len(labels.classes), {"epoch": 1, "precision": "fp32"}
    if cfg.spec.fit == "rule":  # no labels: not even the subset is drawn
        n_used = 0
        p_val, p_test = (np.eye(n_classes)[rule_predict(feature_table(data, s.rows), labels.classes)]
                         for s in (val, test))
    else:
        pick = select_subset(train_all, cfg)
        inputs = _inputs(cfg, data)
        x_train, y_train, n_used = inputs(train_all.rows[pick]), train_all.y[pick], len(pick)
        x_val, x_test = inputs(val.rows), inputs(test.rows)
        model, p_val, c = _select(x_train, y_train, x_val, val.y, n_classes, cfg.seed)
        p_test = _proba(model, x_test, n_classes)
        row.update(train_loss=log_loss(y_train, _proba(model, x_train, n_classes), labels=range(n_classes)),
                   logreg_c=c)
    score = val_score(val.y, p_val, False)
    report({**row, "val_score": score, "val_classes_used": classes_used(p_val)})
    majority = int(np.bincount(train_all.y, minlength=n_classes).argmax())
    final = singlelabel_metrics(test.y, p_test, labels.classes, majority)
    if "logreg_c" in row:
        final["logreg_c"] = row["logreg_c"]
    final.update(val_score=score, test_single_class=int(classes_used(p_test) == 1), epoch=1, best_epoch=1,
                 best_val_score=score, epochs_run=1, collapsed=None, n_labelled_used=n_used, precision="fp32",
                 bn_stats=cfg.bn_stats_applied, done=True)
    save_predictions(out_dir, cfg, labels, data, p_test)
    report(final)
    return final


def _select(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, n_classes: int,
            seed: int) -> tuple[object, np.ndarray, float]:
    """The logistic regression whose inverse regularisation C (from C_GRID) scores best on the validation fold
    (model selection on validation only, as every condition's epoch); returns it, its val probabilities, C."""
    best = None
    for c in C_GRID:
        model = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(),
                              LogisticRegression(C=c, max_iter=5000, random_state=seed))
        model.fit(x_train, y_train)
        p_val = _proba(model, x_val, n_classes)
        score = val_score(y_val, p_val, False)
        if best is None or score > best[0]:  # ties keep the stronger regularisation (the grid ascends)
            best = (score, model, p_val, c)
    return best[1], best[2], best[3]


def _inputs(cfg: FinetuneConfig, data: ECGData) -> Callable[[np.ndarray], np.ndarray]:
    """rows -> the control's inputs: FEATURES (n, F), joined to the frozen encoder's embedding (n, F + D)
    for the tracks that have an encoder."""
    if cfg.spec.init == "handcrafted":
        return lambda rows: feature_table(data, rows)
    device = resolve_device(cfg.device)
    encoder = build_track_encoder(cfg, data).to(device)

    def inputs(rows: np.ndarray) -> np.ndarray:
        emb = Features(encoder, Signals(data, rows, device), cfg.eval_batch_size).x  # (n, D) fp32, eval mode
        return np.hstack([feature_table(data, rows), emb.cpu().numpy().astype(np.float64)])

    return inputs


def _proba(model: object, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities (n, n_classes), zero for classes the fit never saw."""
    out = np.zeros((len(x), n_classes))
    out[:, model.classes_] = model.predict_proba(x)
    return out
