"""The rhythm controls: heart-rate/RR logistic regression, the zero-label clinical rule, and the hybrids that join
those features to a frozen encoder's embedding."""

from __future__ import annotations

import numpy as np
import pytest

from ssrl.data import open_ptbxl, task_labels
from ssrl.data.ptbxl import RHYTHM5
from ssrl.data.rpeaks import FEATURES, feature_table
from ssrl.train import finetune
from ssrl.train.handcrafted import AF_RMSSD_REL, C_GRID, RATE_BPM, SARRH_RANGE_S, rule_predict


def _features(**kw: float) -> np.ndarray:
    """One record's FEATURES: a regular rhythm at 75 bpm unless told otherwise."""
    base = {"hr_bpm": 75.0, "rr_cv": 0.02, "rmssd_rel": 0.02, "rr_range_s": 0.04, "pnn50": 0.0, **kw}
    return np.array([[base[n] for n in FEATURES]])


@pytest.mark.parametrize("kw, want", [
    ({}, "SR"),
    ({"hr_bpm": RATE_BPM[0] - 8}, "SBRAD"),
    ({"hr_bpm": RATE_BPM[1] + 10}, "STACH"),
    ({"rmssd_rel": AF_RMSSD_REL + 0.1, "hr_bpm": 115.0}, "AFIB"),  # irregularly irregular wins over the rate
    ({"rr_range_s": SARRH_RANGE_S + 0.1, "rmssd_rel": AF_RMSSD_REL / 2}, "SARRH"),
    ({"hr_bpm": np.nan, "rmssd_rel": np.nan, "rr_range_s": np.nan}, "SR"),  # no beats found
])
def test_rule_reads_the_textbook_bounds(kw, want):
    assert RHYTHM5[rule_predict(_features(**kw), RHYTHM5)[0]] == want


def test_rule_refuses_a_task_without_the_rhythm_classes():
    with pytest.raises(ValueError, match="rhythm5"):
        rule_predict(_features(), ("NORM", "MI"))


def test_logreg_control_runs_on_the_few_shot_subset(ft_cfg):
    """Features and scikit-learn only (no network, so no precision). Measured on an AVX2 CPU, seeds 42/52/62:
    macro-F1 0.967 against the trivial 0.16, so "0.1 above trivial" has room to spare."""
    seen = []
    final = finetune(ft_cfg(task="rhythm5", track="hrv_logreg", n_per_class=14), seen.append)
    assert [r.get("epoch") for r in seen] == [1, 1] and seen[-1] is final and final["done"]
    assert final["n_labelled_used"] == 70 and final["collapsed"] is None and "train_loss" in seen[0]
    assert final["test_macro_f1"] > final["test_trivial_macro_f1"] + 0.1  # rate and RR carry these labels
    assert finetune(ft_cfg(task="rhythm5", track="hrv_logreg", n_per_class=14), lambda m: None) == final


def test_rule_uses_no_labels(ft_cfg, synth_root, cache_dir):
    """The same predictions for every seed and subset size, and they are rule_predict's on the features.

    Measured on an AVX2 CPU: macro-F1 0.835 against the trivial 0.16 (threshold: 0.1 above trivial)."""
    seen = []
    a = finetune(ft_cfg(task="rhythm5", track="hr_rule", seed=1), seen.append)
    b = finetune(ft_cfg(task="rhythm5", track="hr_rule", seed=2, n_per_class=14), lambda m: None)
    assert a["n_labelled_used"] == 0 and a == b and "train_loss" not in seen[0]
    data = open_ptbxl(synth_root, 100, cache_dir)
    labels = task_labels(data, "rhythm5")
    test = labels.split("test")
    pred = rule_predict(feature_table(data, test.rows), labels.classes)
    assert a["test_accuracy"] == pytest.approx(float(np.mean(pred == test.y)))
    assert a["test_macro_f1"] > a["test_trivial_macro_f1"] + 0.1


@pytest.mark.parametrize("track", ["hybrid", "hybrid_random"])
def test_hybrid_joins_the_features_to_the_embedding(track, ft_cfg, pretrained_ckpt, monkeypatch):
    """The logistic regression sees FEATURES plus the encoder's out_dim columns, on the same subset."""
    import ssrl.train.handcrafted as hc

    widths = []
    real = hc.make_pipeline

    def spy(*steps):
        pipe = real(*steps)
        fit = pipe.fit
        pipe.fit = lambda x, y: (widths.append(x.shape), fit(x, y))[1]
        return pipe

    monkeypatch.setattr(hc, "make_pipeline", spy)
    extra = {"pretrained": str(pretrained_ckpt)} if track == "hybrid" else {}
    final = finetune(ft_cfg(task="rhythm5", track=track, n_per_class=14, **extra), lambda m: None)
    from ssrl.train.common import build_track_encoder

    out_dim = build_track_encoder(ft_cfg(task="rhythm5", track=track, **extra)).out_dim
    assert widths == [(70, len(FEATURES) + out_dim)] * len(C_GRID) and final["n_labelled_used"] == 70 and final["done"]


def test_logreg_strength_is_chosen_on_the_validation_fold(ft_cfg, monkeypatch):
    """Each C of the grid is fitted on the subset and scored on the validation fold; the best one is kept."""
    import ssrl.train.handcrafted as hc

    scores = iter([0.1, 0.3, 0.9, 0.3, 0.2])  # the third C (0.1) wins
    monkeypatch.setattr(hc, "val_score", lambda y, p, m: next(scores, 0.9))
    seen = []
    final = finetune(ft_cfg(task="rhythm5", track="hrv_logreg", n_per_class=14), seen.append)
    assert seen[0]["logreg_c"] == final["logreg_c"] == C_GRID[2]
