"""Which PTB-XL a sweep runs on: the user's, or the built-in synthetic one, announced in one line."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from ssrl.data import default_cache_dir, open_ptbxl

DEFAULT_REAL = Path("data") / "PTB-XL"
SYNTH_SEED = 0


@dataclass(frozen=True)
class DatasetInfo:
    """What every result is tagged with: name, root, fingerprint, sampling rate."""

    name: str  # "ptbxl" | "synthetic"
    root: str
    fingerprint: str
    sampling_rate: int

    def as_dict(self, task: str | None = None) -> dict:
        """The results.json 'dataset' entry."""
        out = {"name": self.name, "root": self.root, "fingerprint": self.fingerprint,
               "sampling_rate": self.sampling_rate}
        if task is not None:
            out["task"] = task
        return out


def synthetic_path(records: int) -> Path:
    """Where the built-in synthetic PTB-XL with `records` records lives (written or not)."""
    return default_cache_dir() / f"synthetic-ptbxl-{records}-seed{SYNTH_SEED}"


def synthetic_root(records: int) -> Path:
    """The built-in synthetic PTB-XL with `records` records, generated once per machine."""
    from ssrl.data.synth import write_synthetic

    dest = synthetic_path(records)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if not (dest / "SYNTHETIC").exists():
            write_synthetic(dest, n_records=records, seed=SYNTH_SEED)
    return dest


def real_data_given(data_root: str | None) -> bool:
    """True when the user points at a PTB-XL (--data-root, $SSRL_DATA_ROOT) or ./data/PTB-XL holds one."""
    return bool(data_root or os.environ.get("SSRL_DATA_ROOT") or (DEFAULT_REAL / "ptbxl_database.csv").exists())


def locate(data_root: str | None, synthetic_records: int, write: bool = True) -> tuple[Path, str]:
    """Pick the data root: --data-root, $SSRL_DATA_ROOT, ./data/PTB-XL, else synthetic; say which.

    write=False (a dry run) gives the synthetic root without generating it.
    """
    if data_root:
        return Path(data_root).expanduser().resolve(), "--data-root"
    if os.environ.get("SSRL_DATA_ROOT"):
        return Path(os.environ["SSRL_DATA_ROOT"]).expanduser().resolve(), "$SSRL_DATA_ROOT"
    if (DEFAULT_REAL / "ptbxl_database.csv").exists():
        return DEFAULT_REAL.resolve(), "./data/PTB-XL"
    root = synthetic_root(synthetic_records) if write else synthetic_path(synthetic_records)
    return root.resolve(), "built-in synthetic PTB-XL (no real PTB-XL found)"


def open_dataset(root: Path, sampling_rate: int) -> DatasetInfo:
    """Open (and cache) the data once in the driver so bad input fails before any trial starts."""
    data = open_ptbxl(root, sampling_rate)
    return DatasetInfo(data.name, str(root), data.fingerprint, sampling_rate)
