"""bench.gpu's data: a synthetic PTB-XL (or carried PTB-XL folders) and its signal cache, written without wfdb.

The cache is the file `ssrl.data.open_ptbxl` builds (docs/DESIGN.md, Cache): same name, same float16
values, same statistics, so `open_ptbxl` then only maps it. Records are read straight from their
format-16 `.dat` files (every PTB-XL record and every synthetic one is format 16), in the same float64
arithmetic as `wfdb.rdsamp`, so the lent GPU machines need no wfdb for it.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
from filelock import FileLock

from ssrl.data import DataError, ECGData, PTBXLMeta, open_ptbxl, read_ptbxl
from ssrl.data.cache import N_LEADS, fingerprint
from ssrl.data.ptbxl import SYNTHETIC_MARKER, TRAIN_FOLDS
from ssrl.data.synth import write_synthetic

FS = 100
CHUNK = 1000  # records per statistics update
_GAIN = re.compile(r"^([-+\d.eE]+)(?:\(([-+\d]+)\))?(?:/\S+)?$")  # e.g. 1000.0(0)/mV


def synthetic_root(records: int, cache_dir: Path) -> Path:
    """Where the synthetic tree lives: bench.throughput's layout, so its bench finds the same data."""
    return cache_dir / f"bench-synthetic-{records}"


def _header(stem: Path) -> tuple[int, list[tuple[float, float]], str]:
    """(samples per lead, [(gain, baseline)] per lead, .dat name) of a format-16 single-file record."""
    lines = [ln.split() for ln in stem.with_suffix(".hea").read_text().splitlines() if ln.strip() and ln[0] != "#"]
    n_sig, n = int(lines[0][1]), int(lines[0][3])
    leads = []
    for parts in lines[1:1 + n_sig]:
        m = _GAIN.match(parts[2]) if len(parts) > 2 else None
        if parts[1] != "16" or m is None or parts[0] != lines[1][0]:
            raise DataError(f"{stem}.hea: not a format-16 single-file record; install wfdb to cache it")
        zero = float(parts[4]) if len(parts) > 4 else 0.0  # wfdb: the baseline defaults to the ADC zero
        gain = float(m.group(1)) or 200.0  # wfdb's default gain for 0
        leads.append((gain, float(m.group(2)) if m.group(2) is not None else zero))
    return n, leads, lines[1][0]


def read_fmt16(stem: Path) -> np.ndarray:
    """One record as (12, T) float16 mV: what wfdb.rdsamp(...).T.astype(float16) gives, without wfdb."""
    n, leads, dat = _header(stem)
    d = np.fromfile(stem.parent / dat, dtype="<i2", count=n * len(leads))
    if len(leads) != N_LEADS or d.size != n * len(leads):
        raise DataError(f"{stem.parent / dat}: truncated or not {N_LEADS} leads; restore the record")
    d = d.reshape(n, len(leads))  # (T, 12) ADC units
    if (d == -32768).any():
        raise DataError(f"{stem.parent / dat}: NaN (missing samples); restore or drop the record")
    gain, base = (np.array(v, dtype=np.float64) for v in zip(*leads))
    x = ((d.astype(np.float64) - base) / gain).T.astype(np.float16)  # (12, T)
    if not np.isfinite(x).all():
        raise DataError(f"{stem.parent / dat}: values beyond float16 range; check the header gain")
    return x


def _write(table: PTBXLMeta, npy: Path, stats: Path, fp: str) -> None:
    """Every record into npy (temporary name, renamed last) and the train-fold lead statistics beside it."""
    stems = [table.root / name for name in table.record_names]
    train = np.isin(table.folds, TRAIN_FOLDS)
    n_samples = read_fmt16(stems[0]).shape[1]
    tmp = npy.with_name(f"{npy.stem}.tmp{os.getpid()}.npy")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(stems), N_LEADS, n_samples))
        acc = np.zeros((3, N_LEADS))  # per lead: sum, sum of squares, count over folds 1-8
        for start in range(0, len(stems), CHUNK):
            part = np.stack([read_fmt16(s) for s in stems[start:start + CHUNK]])  # (B, 12, T)
            if part.shape[2] != n_samples:
                raise DataError(f"{table.root}: records of different lengths near row {start}")
            out[start:start + len(part)] = part
            x64 = part[train[start:start + len(part)]].astype(np.float64)
            acc += (x64.sum(axis=(0, 2)), (x64 * x64).sum(axis=(0, 2)), np.full(N_LEADS, x64.shape[0] * n_samples))
        out.flush()
        del out
        if acc[2, 0] == 0:
            raise DataError(f"{table.root}: no records in folds 1-8 to fit lead statistics")
        mean = acc[0] / acc[2]
        std = np.sqrt(np.maximum(acc[1] / acc[2] - mean**2, 0.0))
        info = {"fingerprint": fp, "n_records": len(stems), "n_samples": n_samples, "sampling_rate": table.sampling_rate,
                "mean": mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist()}
        stats_tmp = stats.with_name(stats.name + f".tmp{os.getpid()}")
        stats_tmp.write_text(json.dumps(info))
        os.replace(stats_tmp, stats)  # stats first: the .npy appearing means both are complete (as cache.py)
        os.replace(tmp, npy)
    finally:
        tmp.unlink(missing_ok=True)


def write_cache(table: PTBXLMeta, cache_dir: Path) -> tuple[Path, bool]:
    """The cache file open_ptbxl looks for, written from the .dat files when absent; (path, whether written now)."""
    fp = fingerprint(table)
    stem = f"{table.name}{table.sampling_rate}-{fp[:20]}"  # open_ptbxl's naming
    npy, stats = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.stats.json"
    if npy.exists() and stats.exists():
        return npy, False
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / f"{stem}.lock")):  # the lock open_ptbxl builds under
        if npy.exists() and stats.exists():
            return npy, False
        _write(table, npy, stats, fp)
    return npy, True


def prepare(records: int, cache_dir: Path, data_root: str | None = None) -> tuple[ECGData, dict]:
    """Carried PTB-XL folders at data_root, else a synthetic PTB-XL of `records` records; cached and opened."""
    t0 = time.perf_counter()
    if data_root:
        root = Path(data_root)
    else:
        root = synthetic_root(records, cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root) + ".lock"):
            if not (root / SYNTHETIC_MARKER).exists():
                write_synthetic(root, n_records=records, seed=0)
    t1 = time.perf_counter()
    _, written = write_cache(read_ptbxl(root, FS), cache_dir)
    data = open_ptbxl(root, FS, cache_dir)
    t2 = time.perf_counter()
    return data, {"source": data.name if data_root else "synthetic", "records": len(data.meta),
                  "tree_s": round(t1 - t0, 2), "cache_s": round(t2 - t1, 2),
                  "cache": "written without wfdb" if written else "reused"}
