"""Augmentations that must keep a rhythm label keep heart rate, measured by wfdb's R-peak detector.

Synthetic 12-lead records of known rate (`ssrl.data.synth_wave`, sinus rhythm without respiratory
variation) are standardised per lead as in training, augmented, brought back to mV and measured with
`wfdb.processing.xqrs_detect` on lead II (the next lead when dropped): the median RR interval over every
stretch that the augmentation left visible. At 500 Hz the detector resolves 2 ms; at 100 Hz one sample
is 10 ms, 1.7 bpm at 100 bpm, too coarse to test a 3 bpm tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from wfdb import processing

from ssrl.augment import PRESETS, Augment, keeps_time_scale
from ssrl.data.synth_wave import WaveSpec, synthesize

FS = 500
RATES = (50.0, 62.0, 75.0, 88.0, 100.0)
LEADS = (1, 0, 10, 9, 11, 5)  # II, I, V5, V4, V6, aVF: tall R waves
TOLERANCE_BPM = 3.0


def _visible(sig: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """(start, stop) of the stretches where some lead is non-zero (crop and mask zero the rest), long enough."""
    nonzero = np.abs(sig).max(0) > 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], nonzero.astype(int), [0]])))
    return [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_len]


def heart_rate(sig: np.ndarray, mv_per_unit: np.ndarray, fs: int = FS) -> float:
    """bpm from the median RR interval of xqrs R peaks within visible stretches; NaN when under 2 intervals."""
    lead = next((i for i in LEADS if np.abs(sig[i]).max() > 0), 0)
    mv = sig[lead].astype(np.float64) * mv_per_unit[lead]
    edge, rr = int(0.25 * fs), []
    for a, b in _visible(sig, 2 * fs):
        peaks = processing.xqrs_detect(mv[a:b], fs, verbose=False)
        peaks = peaks[(peaks >= edge) & (peaks < b - a - edge)]  # a cut edge can look like a QRS
        rr += np.diff(peaks).tolist()
    return 60.0 * fs / float(np.median(rr)) if len(rr) >= 2 else float("nan")


@pytest.fixture(scope="module")
def records() -> tuple[torch.Tensor, np.ndarray]:
    """40 standardised records (8 copies of 5 rates) and each lead's mV per standard unit."""
    mv = torch.tensor(np.stack([synthesize(WaveSpec("SR", hr=r, rr_var=0.0), FS, (7, i)).T / 1000.0
                                for i, r in enumerate(RATES)]), dtype=torch.float32)  # (5, 12, T) mV
    scale = mv.std(-1, keepdim=True)
    z = ((mv - mv.mean(-1, keepdim=True)) / scale).repeat(8, 1, 1)
    return z, scale[..., 0].repeat(8, 1).numpy()


def _rates(x: torch.Tensor, scale: np.ndarray) -> np.ndarray:
    return np.array([heart_rate(r, s) for r, s in zip(x.numpy(), scale)])


def test_the_detector_reads_the_known_rates(records) -> None:
    z, scale = records
    np.testing.assert_allclose(_rates(z[:5], scale[:5]), RATES, atol=TOLERANCE_BPM)


@pytest.mark.parametrize("preset", [p for p in PRESETS if keeps_time_scale(p) and p != "none"])
def test_rhythm_safe_presets_keep_heart_rate(records, preset: str) -> None:
    z, scale = records
    before = _rates(z, scale)
    for seed in (0, 1):
        after = _rates(Augment(PRESETS[preset], FS)(z, torch.Generator().manual_seed(seed)), scale)
        measured = ~np.isnan(after)
        assert measured.mean() >= 0.75, "most augmented records must keep enough beats to measure"
        moved = np.abs(after - before)[measured]
        assert moved.max() <= TOLERANCE_BPM, f"{preset} moved heart rate by up to {moved.max():.1f} bpm"


@pytest.mark.parametrize("preset", [p for p in PRESETS if not keeps_time_scale(p)])
def test_resizing_presets_move_heart_rate(records, preset: str) -> None:
    z, scale = records
    before = _rates(z, scale)
    after = _rates(Augment(PRESETS[preset], FS)(z, torch.Generator().manual_seed(0)), scale)
    moved = np.abs(after - before)[~np.isnan(after)]
    assert (moved > TOLERANCE_BPM).mean() > 0.5, f"{preset} should change heart rate: {np.round(moved, 1)}"
