"""Built-in synthetic PTB-XL: the same tree layout, CSV schema and label semantics as the real one.

`write_synthetic(dest, n_records, seed)` writes WFDB records (`records100/00000/00001_lr.{hea,dat}`,
and `records500/.../NNNNN_hr` on request), `ptbxl_database.csv`, the real `scp_statements.csv` and
a `SYNTHETIC` marker. Labels are drawn first (`ssrl.data.synth_cohort`: patients, diagnoses, rhythms,
folds, metadata) and then rendered into the waveforms (`ssrl.data.synth_wave`: a 3-D heart dipole on
12 leads), so they are learnable but not trivial. Output is byte-identical for the same arguments, and
a record's 100 Hz file does not depend on whether 500 Hz was requested too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ssrl.data.synth_cohort import COLUMNS, sample_cohort
from ssrl.data.synth_statements import SCP_STATEMENTS_CSV
from ssrl.data.synth_wave import LEADS, synthesize_batch

GENERATOR = "ssrl.data.synth v1"
_SUFFIX = {100: "lr", 500: "hr"}
_BATCH = {100: 100, 500: 20}  # records synthesised together (bounds memory to ~100 MB)


def record_path(ecg_id: int, sampling_rate: int) -> str:
    """PTB-XL relative record name, e.g. `records100/01000/01234_lr` (folders of 1,000 ids)."""
    return f"records{sampling_rate}/{ecg_id // 1000 * 1000:05d}/{ecg_id:05d}_{_SUFFIX[sampling_rate]}"


def _write_wfdb(stem: Path, d: np.ndarray, fs: int) -> None:
    """Write `stem.hea` and `stem.dat` exactly as `wfdb.wrsamp` does for fmt 16, gain 1000, mV.

    wfdb 4.x takes ~90 ms per record to write a header (per-field pandas lookups); this takes ~0.3 ms.
    tests/data/test_synth.py checks byte equality with `wfdb.wrsamp`.
    """
    d = np.ascontiguousarray(d, dtype="<i2")  # (T, 12)
    checksum = d.astype(np.int64).sum(axis=0) % 65536
    name = stem.name
    lines = [f"{name} {d.shape[1]} {fs} {d.shape[0]}"]
    lines += [f"{name}.dat 16 1000.0(0)/mV 16 0 {d[0, i]} {checksum[i]} 0 {lead}" for i, lead in enumerate(LEADS)]
    stem.with_suffix(".hea").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".dat").write_bytes(d.tobytes())


def write_synthetic(dest: Path | str, n_records: int = 2000, seed: int = 0,
                    sampling_rates: tuple[int, ...] = (100,)) -> Path:
    """Write a synthetic PTB-XL tree with n_records records under dest and return dest."""
    if n_records < 1:
        raise ValueError(f"n_records must be >= 1, got {n_records}")
    bad = sorted(set(sampling_rates) - set(_SUFFIX))
    if bad or not sampling_rates:
        raise ValueError(f"sampling_rates must be a non-empty subset of (100, 500), got {sampling_rates}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    meta, waves = sample_cohort(n_records, seed)
    ids = meta["ecg_id"].to_numpy()
    for fs in sorted(set(sampling_rates)):
        for start in range(0, n_records, _BATCH[fs]):
            chunk = ids[start:start + _BATCH[fs]]
            records = synthesize_batch(waves[start:start + len(chunk)], fs, [(seed, int(i)) for i in chunk])
            for ecg_id, d in zip(chunk, records):
                stem = dest / record_path(int(ecg_id), fs)
                stem.parent.mkdir(parents=True, exist_ok=True)
                _write_wfdb(stem, d, fs)
    (dest / "scp_statements.csv").write_text(SCP_STATEMENTS_CSV)
    meta = meta.assign(filename_lr=[record_path(int(i), 100) for i in meta["ecg_id"]],
                       filename_hr=[record_path(int(i), 500) for i in meta["ecg_id"]])
    pd.DataFrame(meta, columns=list(COLUMNS)).to_csv(dest / "ptbxl_database.csv", index=False)
    (dest / "SYNTHETIC").write_text(
        f"generator: {GENERATOR}\nn_records: {n_records}\nseed: {seed}\n"
        f"sampling_rates: {','.join(str(r) for r in sorted(set(sampling_rates)))}\n"
    )
    return dest
