"""Per-node signal cache: every record in one memory-mapped (N, 12, T) float16 .npy, built once under a lock."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wfdb
from filelock import FileLock

from ssrl.atomic import atomic_open
from ssrl.data.ptbxl import DATABASE_CSV, STATEMENTS_CSV, TRAIN_FOLDS, DataError, PTBXLMeta, read_ptbxl

CACHE_VERSION = 1  # bump when the file layout or the conversion changes
N_LEADS = 12
CHUNK = 250  # records per work unit
BIG_BUILD = 500  # builds of at least this many records use worker processes and report progress
MP_CONTEXT = "spawn"  # fresh interpreters for the workers: safe inside threaded (Ray) processes


@dataclass(frozen=True, eq=False, repr=False)
class ECGData(PTBXLMeta):
    """PTB-XL metadata plus the memory-mapped signals and the train-fold lead statistics."""

    signals: np.ndarray  # (N, 12, T) float16 memmap in mV; row i is meta.index[i]
    mean: np.ndarray  # (12,) float32 per-lead mean over folds 1-8
    std: np.ndarray  # (12,) float32 per-lead std over folds 1-8
    fingerprint: str  # sha256 of CSV bytes + record names/sizes/mtimes + rate
    cache_path: Path

    def __reduce__(self) -> tuple:
        """Pickle as a re-open from the per-node cache, never as 0.5 GB of signals (e.g. into Ray tasks)."""
        return open_ptbxl, (self.root.absolute(), self.sampling_rate, self.cache_path.parent.absolute())


def default_cache_dir() -> Path:
    """$SSRL_CACHE_DIR, else ~/.cache/ssrl."""
    env = os.environ.get("SSRL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ssrl"


def pin_cache_dir() -> None:
    """Make a relative $SSRL_CACHE_DIR absolute, from this process's working directory.

    Call it before starting processes that read it: Ray runs each trial in a working folder of its own, where
    a relative path names a new, empty cache (each demo trial rebuilt the 48 MB signal cache there, about
    10 s a trial, and left it behind)."""
    if os.environ.get("SSRL_CACHE_DIR"):
        os.environ["SSRL_CACHE_DIR"] = str(default_cache_dir().absolute())


def fingerprint(table: PTBXLMeta) -> str:
    """sha256 over the CSV bytes, the record files' relative names, sizes and mtimes, and the rate."""
    h = hashlib.sha256(f"ssrl-cache-v{CACHE_VERSION} rate={table.sampling_rate}\n".encode())
    for csv in (DATABASE_CSV, STATEMENTS_CSV):
        h.update((table.root / csv).read_bytes())
    wanted: dict[str, set[str]] = {}
    for name in table.record_names:
        parent, _, stem = name.rpartition("/")
        wanted.setdefault(parent, set()).update((stem + ".hea", stem + ".dat"))
    lines = []
    for parent in sorted(wanted):
        with os.scandir(table.root / parent) as it:  # DirEntry.stat: one fstatat per file, no path building
            for e in it:
                if e.name in wanted[parent]:
                    st = e.stat()
                    lines.append(f"{parent}/{e.name} {st.st_size} {st.st_mtime_ns}")
    h.update("\n".join(sorted(lines)).encode())
    return h.hexdigest()


def _dat_bytes_needed(header: wfdb.Record) -> int | None:
    """Bytes the header's signal file must hold (format 16 only; None when unknown)."""
    if set(header.fmt or []) != {"16"}:
        return None
    return 2 * header.n_sig * header.sig_len


def _diagnose(path: str, exc: BaseException | None, shape: tuple[int, ...] | None) -> DataError:
    """A one-line DataError for a record that failed to load: bad header, truncated or unreadable .dat."""
    try:
        header = wfdb.rdheader(path)
    except Exception as e:  # noqa: BLE001 - any parse failure is the header's fault
        return DataError(f"{path}.hea: header does not parse ({type(e).__name__}: {e}); restore the record")
    dat = Path(path).parent / (header.file_name[0] if header.file_name else Path(path).name + ".dat")
    need, size = _dat_bytes_needed(header), dat.stat().st_size if dat.exists() else 0
    if need is not None and size < need:
        return DataError(f"{dat}: truncated ({size} of {need} bytes the header promises); restore the record")
    what = f"{type(exc).__name__}: {exc}" if exc else f"shape {shape}"
    return DataError(f"{dat}: unreadable ({what}); restore the record".replace("\n", " "))


def read_record(path: str, n_samples: int | None = None) -> np.ndarray:
    """One record via wfdb.rdsamp as (T, 12) float64 mV; DataError naming the file when it is bad."""
    try:
        x, _ = wfdb.rdsamp(path)  # (T, leads) float64, physical units
    except Exception as e:  # noqa: BLE001 - wfdb raises many types for bad files
        raise _diagnose(path, e, None) from None
    if x.ndim != 2 or x.shape[1] != N_LEADS or (n_samples is not None and x.shape[0] != n_samples):
        raise _diagnose(path, None, x.shape)
    if not np.isfinite(x).all():
        lead = int(np.flatnonzero(~np.isfinite(x).all(axis=0))[0])
        raise DataError(f"{path}.dat: NaN (missing samples) in lead {lead}; restore or drop the record")
    return x


def _convert_chunk(tmp: str, start: int, paths: list[str], train: list[bool], n_samples: int) -> np.ndarray:
    """Write records into rows start.. of the tmp memmap; return train-fold [sum, sum of squares, count]."""
    out = np.load(tmp, mmap_mode="r+")  # (N, 12, T) float16
    acc = np.zeros((3, N_LEADS), dtype=np.float64)
    for i, (path, is_train) in enumerate(zip(paths, train), start=start):
        x = read_record(path, n_samples).T.astype(np.float16)  # (T, 12) -> (12, T)
        if not np.isfinite(x).all():
            raise DataError(f"{path}.dat: values beyond float16 range (|x| > 65504 mV); check the header gain")
        out[i] = x
        if is_train:
            x64 = x.astype(np.float64)
            acc += (x64.sum(axis=1), (x64 * x64).sum(axis=1), np.full(N_LEADS, x.shape[1]))
    out.flush()
    return acc


_LAST_PLAIN_LINE: dict[Path, float] = {}  # dest -> when its last plain progress line was printed


def _progress(done: int, total: int, t0: float, dest: Path) -> None:
    """Progress on stderr: one line redrawn on a terminal; elsewhere a plain line at most every 30 s and at the end."""
    line = f"ssrl.data: caching {done}/{total} records into {dest.name} ({time.time() - t0:.0f} s)"
    if sys.stderr.isatty():
        print("\r" + line, end="\n" if done == total else "", file=sys.stderr, flush=True)
    elif done == total or time.time() - _LAST_PLAIN_LINE.get(dest, t0) >= 30:
        _LAST_PLAIN_LINE[dest] = time.time()
        print(line, file=sys.stderr, flush=True)


def _build(table: PTBXLMeta, npy: Path, stats: Path, fp: str, workers: int | None) -> None:
    """Convert every record into npy (tmp name, then atomic rename) and write the lead statistics."""
    paths = [str(table.root / name) for name in table.record_names]
    train = np.isin(table.folds, TRAIN_FOLDS).tolist()
    n_samples = read_record(paths[0]).shape[0]
    big = len(paths) >= BIG_BUILD
    workers = workers or (min(os.cpu_count() or 1, 8) if big else 1)
    tmp = npy.with_name(f"{npy.stem}.tmp{os.getpid()}.npy")
    try:
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(paths), N_LEADS, n_samples)).flush()
        jobs = [(str(tmp), s, paths[s:s + CHUNK], train[s:s + CHUNK], n_samples) for s in range(0, len(paths), CHUNK)]
        acc, t0, done = np.zeros((3, N_LEADS)), time.time(), 0
        if workers == 1:
            for job in jobs:
                acc += _convert_chunk(*job)
                done += len(job[2])
                if big:
                    _progress(done, len(paths), t0, npy)
        else:
            ctx = multiprocessing.get_context(MP_CONTEXT)
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                pending = {pool.submit(_convert_chunk, *job): len(job[2]) for job in jobs}
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for f in finished:
                        if f.exception() is not None:
                            pool.shutdown(cancel_futures=True)
                            raise f.exception()
                        acc += f.result()
                        done += pending.pop(f)
                    if big:
                        _progress(done, len(paths), t0, npy)
        total, total_sq, count = acc
        if count[0] == 0:
            raise DataError(f"{table.root / DATABASE_CSV}: no records in folds 1-8 to fit lead statistics")
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
        std = np.where(std > 0, std, 1.0)
        info = {"fingerprint": fp, "n_records": len(paths), "n_samples": n_samples,
                "sampling_rate": table.sampling_rate, "mean": mean.tolist(), "std": std.tolist()}
        with atomic_open(stats, "w") as f:  # stats first: the .npy appearing means both are complete
            f.write(json.dumps(info))
        os.replace(tmp, npy)
    finally:
        tmp.unlink(missing_ok=True)


def open_ptbxl(root: str | Path, sampling_rate: int = 100, cache_dir: str | Path | None = None,
               workers: int | None = None) -> ECGData:
    """Validate the PTB-XL tree and open its signals through the per-node cache (built on first use)."""
    table = read_ptbxl(root, sampling_rate)
    fp = fingerprint(table)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    stem = f"{table.name}{sampling_rate}-{fp[:20]}"
    npy, stats = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.stats.json"
    if not (npy.exists() and stats.exists()):
        cache_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache_dir / f"{stem}.lock")):  # one builder per node; the others wait here
            if not (npy.exists() and stats.exists()):
                _build(table, npy, stats, fp, workers)
    signals = np.load(npy, mmap_mode="r")  # (N, 12, T) float16
    info = json.loads(stats.read_text())
    if info["fingerprint"] != fp or signals.shape[0] != len(table.meta):
        raise DataError(f"{npy}: cache does not match {table.root}; delete it and open again")
    mean, std = (np.asarray(info[k], dtype=np.float32) for k in ("mean", "std"))
    return ECGData(table.root, table.sampling_rate, table.meta, table.statements, table.name, table.n_listed,
                   signals, mean, std, fp, npy)
