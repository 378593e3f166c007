"""R peaks by majority vote over five leads (neurokit2), and the heart-rate/RR features built on them.

Synthetic records have known beat times (ssrl.data.synth_wave.beat_times with the record's own heart stream),
so the detected rate and irregularity are checked against the truth; on the real PTB-XL (PTBXL_ROOT) the test
fold's per-class medians must be physiological. Measured on the whole real test fold (2,047 rhythm5 records,
100 Hz): SR 70.6 bpm, RR-CV 0.022; SBRAD 50.0 bpm; STACH 109.1 bpm; AFIB RR-CV 0.188; no record without beats.
"""

from __future__ import annotations

import numpy as np
import pytest

from ssrl.data import open_ptbxl, task_labels
from ssrl.data.rpeaks import FEATURES, VOTE_LEADS, feature_table, record_features, record_peaks, vote_peaks
from ssrl.data.synth_wave import DURATION_S, WaveSpec, beat_times, synthesize


def _record(spec: WaveSpec, seed: int, fs: int) -> tuple[np.ndarray, np.ndarray]:
    """(12, T) mV and the true R-peak times inside the record (s)."""
    mv = synthesize(spec, fs, (7, seed)).T / 1000.0
    r, _ = beat_times(spec, np.random.default_rng([7, seed, 0]))  # the heart's own stream, as synthesize draws it
    return mv, r[(r >= 0) & (r < DURATION_S)]


def _truth(r: np.ndarray) -> dict[str, float]:
    rr = np.diff(r)
    return {"hr_bpm": 60.0 / np.median(rr), "rr_cv": rr.std() / rr.mean()}


@pytest.mark.parametrize("fs", [100, 500])
@pytest.mark.parametrize("rate", [45.0, 72.0, 110.0, 150.0])
def test_heart_rate_within_2_bpm_of_the_truth(fs, rate):
    for seed in range(3):
        mv, r = _record(WaveSpec("SR", hr=rate, rr_var=0.02), seed, fs)
        f = dict(zip(FEATURES, record_features(mv, fs)))
        assert abs(f["hr_bpm"] - _truth(r)["hr_bpm"]) <= 2.0, (fs, rate, seed, f["hr_bpm"], _truth(r))


@pytest.mark.parametrize("fs", [100, 500])
def test_beats_found_are_the_true_beats(fs):
    mv, r = _record(WaveSpec("SR", hr=80, rr_var=0.03), 1, fs)
    found = record_peaks(mv, fs) / fs
    inside = r[(r > 0.5) & (r < DURATION_S - 0.5)]  # the detector may miss a beat cut by the record's edge
    nearest = np.abs(found[:, None] - inside[None, :]).min(0)
    assert (nearest < 0.05).all() and len(found) <= len(r)


@pytest.mark.parametrize("fs", [100, 500])
def test_irregularity_tracks_the_truth(fs):
    """RR-CV within 0.03 of the truth for regular and irregularly irregular rhythms alike."""
    for spec in (WaveSpec("SR", hr=70, rr_var=0.0), WaveSpec("AFIB", hr=90, rr_var=0.25)):
        for seed in range(3):
            mv, r = _record(spec, seed, fs)
            got = dict(zip(FEATURES, record_features(mv, fs)))["rr_cv"]
            assert abs(got - _truth(r)["rr_cv"]) < 0.03, (spec.rhythm, fs, seed, got, _truth(r))


def test_one_noisy_lead_is_outvoted():
    """A lead of pure noise adds no beats and removes none: the majority decides."""
    mv, _ = _record(WaveSpec("SR", hr=75, rr_var=0.02), 2, 100)
    clean = record_peaks(mv, 100)
    noisy = mv.copy()
    noisy[VOTE_LEADS[0]] = np.random.default_rng(0).normal(0, 0.5, mv.shape[1])
    assert np.abs(record_peaks(noisy, 100) - clean).max() <= 2 and len(record_peaks(noisy, 100)) == len(clean)


def test_vote_needs_a_majority():
    a, b, c = np.array([100, 300]), np.array([104, 700]), np.array([98, 302])
    assert vote_peaks([a, b, c], 100, 2).tolist() == [100, 301]  # medians; 700 is one lead's beat only
    assert vote_peaks([a, b, c], 100, 3).tolist() == [100]


def test_flat_record_has_no_features():
    assert np.isnan(record_features(np.zeros((12, 1000)), 100)).all()


def test_feature_table_is_cached_per_row(synth_root, tmp_path):
    data = open_ptbxl(synth_root, 100, tmp_path)
    rows = np.array([3, 1, 3])
    first = feature_table(data, rows)
    assert first.shape == (3, len(FEATURES)) and np.array_equal(first[0], first[2], equal_nan=True)
    cached = next(data.cache_path.parent.glob(f"{data.cache_path.stem}.rr-*.npy"))
    table = np.load(cached)
    assert table[[1, 3], -1].tolist() == [1.0, 1.0] and table[0, -1] == 0.0  # only the rows asked for
    assert np.array_equal(feature_table(data, np.array([1])), first[1:2], equal_nan=True)


def test_real_test_fold_is_physiological(real_root, real_cache):
    """Per-class medians on the real test fold: SBRAD < 60 bpm, STACH > 100, SR 60-100 with RR-CV < 0.05,
    AFIB RR-CV > 0.12 (classes with fewer than 5 records in a partial unpack are not judged)."""
    data = open_ptbxl(real_root, 100, real_cache)
    labels = task_labels(data, "rhythm5")
    test = labels.split("test")
    f = feature_table(data, test.rows)
    med = {c: np.nanmedian(f[test.y == i], axis=0) for i, c in enumerate(labels.classes)
           if (test.y == i).sum() >= 5}
    hr, cv = FEATURES.index("hr_bpm"), FEATURES.index("rr_cv")
    checks = {"SBRAD": lambda m: m[hr] < 60, "STACH": lambda m: m[hr] > 100,
              "SR": lambda m: 60 < m[hr] < 100 and m[cv] < 0.05, "AFIB": lambda m: m[cv] > 0.12}
    judged = {c: bool(check(med[c])) for c, check in checks.items() if c in med}
    assert "SR" in judged and all(judged.values()), {c: med[c].round(3).tolist() for c in med}
