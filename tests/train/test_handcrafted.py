"""The hand-crafted rhythm control: wfdb R peaks -> heart rate and RR statistics -> logistic regression."""

from __future__ import annotations

import numpy as np
import pytest

from ssrl.data.synth_wave import WaveSpec, synthesize
from ssrl.train import finetune
from ssrl.train.handcrafted import FEATURES, rr_features


def _mv(spec: WaveSpec, seed: int, fs: int = 100) -> np.ndarray:
    return synthesize(spec, fs, (3, seed)).T / 1000.0  # (12, T) mV


@pytest.mark.parametrize("rate", [50.0, 75.0, 88.0])
def test_features_read_the_heart_rate(rate):
    f = dict(zip(FEATURES, rr_features(_mv(WaveSpec("SR", hr=rate, rr_var=0.0), 0), 100)))
    assert abs(f["hr_median"] - rate) <= 3.0


def test_irregular_rhythm_has_irregular_rr():
    sinus = dict(zip(FEATURES, rr_features(_mv(WaveSpec("SR", hr=80, rr_var=0.0), 1), 100)))
    afib = dict(zip(FEATURES, rr_features(_mv(WaveSpec("AFIB", hr=80, rr_var=0.25), 1), 100)))
    # at 100 Hz a sinus record's RR still varies by a sample or two (cv ~0.06); AFIB's by ~0.2
    assert afib["rr_cv"] > 2 * sinus["rr_cv"] and afib["rmssd_s"] > 2 * sinus["rmssd_s"]


def test_flat_record_gives_missing_features():
    assert np.isnan(rr_features(np.zeros((12, 1000)), 100)).all()


def test_control_runs_as_a_track_on_the_few_shot_subset(ft_cfg):
    seen = []
    final = finetune(ft_cfg(task="rhythm5", track="hrv_logreg", n_per_class=14), seen.append)
    assert [r.get("epoch") for r in seen] == [1, 1] and seen[-1] is final and final["done"]
    assert final["n_labelled"] == 70 and final["collapsed"] is None
    assert final["test_macro_f1"] > final["test_trivial_macro_f1"] + 0.1  # rate and RR carry these labels
    assert finetune(ft_cfg(task="rhythm5", track="hrv_logreg", n_per_class=14), lambda m: None) == final
