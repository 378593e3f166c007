"""R peaks, heart rate and RR regularity of a record, and a per-node cache of those features.

R peaks come from neurokit2 (``ecg_clean`` then ``ecg_peaks``, its default method, which scales its windows
by the sampling rate: 100 and 500 Hz alike) on five leads with clear QRS complexes. A beat counts when a
majority of those leads place an R peak within ``TOLERANCE_S`` of each other; its time is their median. One
noisy lead therefore neither adds beats nor removes them. Five numbers describe the rhythm (``FEATURES``):
the heart rate, two measures of RR irregularity, the RR range in seconds and pNN50.

These features feed the rhythm controls (ssrl.train.handcrafted). Computing them takes about 40 ms a record,
so ``feature_table`` keeps them beside the signal cache, keyed by the data's fingerprint and ``VERSION``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from filelock import FileLock

from ssrl.atomic import atomic_open

VOTE_LEADS = (1, 0, 5, 7, 10)  # II, I, aVF, V2, V5
TOLERANCE_S = 0.10  # one beat's R peaks in different leads lie within a QRS width of each other
FEATURES = ("hr_bpm", "rr_cv", "rmssd_rel", "rr_range_s", "pnn50")
VERSION = "nk2-vote5-v1"  # change when the detector or the features change: the cache key holds it


def lead_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    """R-peak sample positions of one lead (T,) in mV, from neurokit2; empty when it finds none."""
    import neurokit2 as nk  # imported here: ~1 s, and only the controls need it

    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all() or np.ptp(x) < 1e-6:
        return np.zeros(0, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _, info = nk.ecg_peaks(nk.ecg_clean(x, sampling_rate=int(fs)), sampling_rate=int(fs))
        except (ValueError, IndexError, ZeroDivisionError):  # too few beats for its own statistics
            return np.zeros(0, dtype=np.int64)
    return np.asarray(info["ECG_R_Peaks"], dtype=np.int64)


def vote_peaks(per_lead: list[np.ndarray], fs: float, need: int) -> np.ndarray:
    """Beats that at least ``need`` leads agree on (peaks within TOLERANCE_S), as median sample positions."""
    found = [(int(p), lead) for lead, peaks in enumerate(per_lead) for p in peaks]
    found.sort()
    tol, out, i = TOLERANCE_S * fs, [], 0
    while i < len(found):
        j = i
        while j + 1 < len(found) and found[j + 1][0] - found[i][0] <= tol:
            j += 1
        group = found[i:j + 1]
        if len({lead for _, lead in group}) >= need:
            out.append(int(np.median([p for p, _ in group])))
        i = j + 1
    return np.asarray(out, dtype=np.int64)


def record_peaks(mv: np.ndarray, fs: float) -> np.ndarray:
    """Consensus R peaks of one record (12, T) in mV: a majority of VOTE_LEADS must agree on each beat."""
    return vote_peaks([lead_peaks(mv[lead], fs) for lead in VOTE_LEADS], fs, len(VOTE_LEADS) // 2 + 1)


def rr_features(peaks: np.ndarray, fs: float) -> np.ndarray:
    """FEATURES from R-peak positions; NaN when there are fewer than 3 beats or the rate is implausible."""
    rr = np.diff(np.asarray(peaks, dtype=np.float64)) / fs  # (beats - 1,) seconds
    if len(rr) < 2 or not 0.25 <= np.median(rr) <= 2.5:  # 24-240 bpm
        return np.full(len(FEATURES), np.nan)
    d = np.diff(rr)
    return np.array([60.0 / np.median(rr), rr.std() / rr.mean(), np.sqrt(np.mean(d**2)) / rr.mean(),
                     rr.max() - rr.min(), np.mean(np.abs(d) > 0.05)])


def record_features(mv: np.ndarray, fs: float) -> np.ndarray:
    """FEATURES of one record (12, T) in mV."""
    return rr_features(record_peaks(mv, fs), fs)


def feature_table(data: object, rows: np.ndarray) -> np.ndarray:
    """FEATURES of the given rows of an ECGData: (n, len(FEATURES)), computed once per node and cached.

    The cache file sits beside the signal cache and holds every row computed so far (a flag column says
    which); concurrent trials each compute what is missing and merge under a file lock.
    """
    rows = np.asarray(rows, dtype=np.int64)
    path = Path(data.cache_path).with_name(f"{Path(data.cache_path).stem}.rr-{VERSION}.npy")
    lock = FileLock(str(path) + ".lock")
    with lock:
        table = _load(path, len(data.signals))
    todo = np.unique(rows[table[rows, -1] == 0])
    if len(todo):
        fresh = np.stack([record_features(np.asarray(data.signals[r], dtype=np.float32), data.sampling_rate)
                          for r in todo])
        with lock:
            table = _load(path, len(data.signals))
            table[todo, :-1], table[todo, -1] = fresh, 1.0
            with atomic_open(path, "wb") as f:
                np.save(f, table)
    return table[rows, :-1].copy()


def _load(path: Path, n_rows: int) -> np.ndarray:
    """The cached table (n_rows, len(FEATURES) + 1), or an empty one (last column: 1 where computed)."""
    if path.exists():
        table = np.load(path)
        if table.shape == (n_rows, len(FEATURES) + 1):
            return table
    return np.zeros((n_rows, len(FEATURES) + 1))
