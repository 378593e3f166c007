"""The per-node signal cache: built once, memory-mapped, keyed by the sources, safe under concurrency."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb

from ssrl.data import DataError, open_ptbxl, read_ptbxl
from ssrl.data import cache as cache_mod
from ssrl.data.cache import fingerprint
from ssrl.train.loop import Signals


def standardised(data, rows) -> np.ndarray:
    """What training reads of these rows: (B, 12, T) float32, standardised with the train-fold statistics."""
    return Signals(data, rows, torch.device("cpu")).get(torch.arange(len(rows))).numpy()


def forbid_wfdb(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any WFDB read fail, to prove a load comes from the cache alone."""
    def boom(*args, **kwargs):
        raise AssertionError("a WFDB file was read")
    for name in ("rdsamp", "rdrecord", "rdheader"):
        monkeypatch.setattr(wfdb, name, boom)


def count_rdsamp(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every wfdb.rdsamp call (the reads still happen)."""
    calls, real = [], wfdb.rdsamp
    def counting(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)
    monkeypatch.setattr(wfdb, "rdsamp", counting)
    return calls


def test_load_matches_wfdb_and_reads_no_record(tiny_root: Path, tiny_cache: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_wfdb(monkeypatch)
    data = open_ptbxl(tiny_root, cache_dir=tiny_cache)  # load time is measured in bench/, not asserted
    assert data.signals.shape == (40, 12, 1000) and data.signals.dtype == np.float16
    assert isinstance(data.signals, np.memmap) and data.cache_path.parent == tiny_cache
    names = {p.name for p in tiny_cache.iterdir()} - {data.cache_path.stem + ".lock"}
    assert names == {data.cache_path.name, data.cache_path.stem + ".stats.json"}  # no temporary left
    monkeypatch.undo()
    for row in (0, 17, 39):  # row i is meta.index[i], in mV, float16-rounded
        x, _ = wfdb.rdsamp(str(tiny_root / data.meta["filename_lr"].iloc[row]))
        np.testing.assert_allclose(data.signals[row], x.T, rtol=2**-10, atol=1e-4)


def test_pickles_as_a_reopen(tiny_root: Path, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = open_ptbxl(tiny_root, cache_dir=tiny_cache)
    blob = pickle.dumps(data)
    assert len(blob) < 10_000  # not the signals
    forbid_wfdb(monkeypatch)
    back = pickle.loads(blob)
    assert back.cache_path == data.cache_path and repr(back).startswith("ECGData(") and len(repr(back)) < 300
    np.testing.assert_array_equal(standardised(back, [3, 1]), standardised(data, [3, 1]))


def test_statistics_from_train_folds_only(tiny_root: Path, tiny_cache: Path) -> None:
    data = open_ptbxl(tiny_root, cache_dir=tiny_cache)
    x = data.signals.astype(np.float64)  # (N, 12, T)
    train = x[data.folds <= 8]
    np.testing.assert_allclose(data.mean, train.mean(axis=(0, 2)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(data.std, train.std(axis=(0, 2)), rtol=1e-5)
    assert (data.folds > 8).any()
    assert np.abs(x.std(axis=(0, 2)) / data.std - 1).max() > 1e-4  # all folds would give other numbers
    batch = standardised(data, np.flatnonzero(data.folds <= 8))  # (B, 12, T)
    assert batch.dtype == np.float32 and batch.shape[1:] == (12, 1000)
    np.testing.assert_allclose(batch.mean(axis=(0, 2)), 0, atol=1e-3)
    np.testing.assert_allclose(batch.std(axis=(0, 2)), 1, atol=1e-3)
    rows = np.array([5, 2, 5])
    expect = (x[5] - data.mean[:, None]) / data.std[:, None]
    np.testing.assert_allclose(standardised(data, rows)[2], expect, rtol=1e-4, atol=1e-4)


def test_fingerprint_follows_sources(tiny: Path) -> None:
    base = fingerprint(read_ptbxl(tiny))
    assert fingerprint(read_ptbxl(tiny)) == base
    assert fingerprint(read_ptbxl(tiny, sampling_rate=500)) != base
    dat = tiny / "records100/00000/00003_lr.dat"
    st = dat.stat()
    os.utime(dat, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    touched = fingerprint(read_ptbxl(tiny))
    assert touched != base
    os.utime(dat, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fingerprint(read_ptbxl(tiny)) == base
    csv = tiny / "scp_statements.csv"
    csv.write_text(csv.read_text() + "\n")
    assert fingerprint(read_ptbxl(tiny)) != base


def test_changed_record_rebuilds(tiny: Path, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_rdsamp(monkeypatch)
    first = open_ptbxl(tiny, cache_dir=tiny_cache)  # the copy keeps mtimes: same key, no read
    assert calls == []
    dat = tiny / "records100/00000/00003_lr.dat"
    d = np.fromfile(dat, dtype="<i2").reshape(-1, 12)  # (T, 12) digital, 1 uV per step
    d[:, 0] = 1234
    d.tofile(dat)
    second = open_ptbxl(tiny, cache_dir=tiny_cache)
    assert len(calls) >= 40 and second.cache_path != first.cache_path
    row = int(np.flatnonzero(second.meta.index == 3)[0])
    np.testing.assert_allclose(second.signals[row, 0], 1.234, rtol=1e-3)


def test_500hz_has_its_own_cache(tiny_root: Path, tiny_cache: Path, tmp_path: Path) -> None:
    hz100, hz500 = open_ptbxl(tiny_root, 100, tiny_cache), open_ptbxl(tiny_root, 500, tmp_path)
    assert hz100.fingerprint != hz500.fingerprint
    assert hz100.signals.shape == (40, 12, 1000) and hz500.signals.shape == (40, 12, 5000)
    np.testing.assert_allclose(hz500.signals[:, :, ::5].mean(), hz100.signals.mean(), atol=0.05)


def _open_in_child(root: str, cache: str, barrier, out) -> None:
    """Child process: wait for the sibling, open the data, report how many records it read itself."""
    calls = []
    real = wfdb.rdsamp
    wfdb.rdsamp = lambda path, *a, **k: calls.append(path) or real(path, *a, **k)
    barrier.wait()
    data = open_ptbxl(root, cache_dir=cache)
    out.put((len(calls), str(data.cache_path), float(np.abs(data.signals[:, :, :50]).sum())))


def test_concurrent_processes_build_once(tiny: Path, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_open_in_child, args=(str(tiny), str(tmp_path), barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    reads = sorted(r[0] for r in results)
    assert reads[0] == 0 and reads[1] >= 40  # one built, the other waited and reused
    assert results[0][1:] == results[1][1:]
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_parallel_build_matches_serial(tiny_root: Path, tiny_cache: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(cache_mod, "CHUNK", 7)  # 6 work units over 2 spawned processes
    monkeypatch.setattr(cache_mod, "BIG_BUILD", 10)  # counts as big: progress on stderr
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: one line redrawn per chunk
    serial = open_ptbxl(tiny_root, cache_dir=tiny_cache)
    parallel = open_ptbxl(tiny_root, cache_dir=tmp_path, workers=2)
    assert parallel.cache_path.name == serial.cache_path.name
    progress = capsys.readouterr().err.split("\r")
    assert any("caching 7/40" in p or "caching 14/40" in p for p in progress)  # reported per chunk
    assert progress[-1].startswith("ssrl.data: caching 40/40") and progress[-1].endswith("\n")
    np.testing.assert_array_equal(parallel.signals, serial.signals)
    np.testing.assert_allclose(parallel.mean, serial.mean, rtol=1e-6)


def test_progress_off_a_terminal_is_plain_lines(tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    """CI logs and `| tee` get no carriage returns: one plain line at the end (and at most one per 30 s)."""
    monkeypatch.setattr(cache_mod, "CHUNK", 7)
    monkeypatch.setattr(cache_mod, "BIG_BUILD", 10)
    open_ptbxl(tiny_root, cache_dir=tmp_path, workers=1)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if "caching" in ln]
    assert len(lines) == 1 and lines[0].startswith("ssrl.data: caching 40/40")  # 6 chunks, well under 30 s


def corrupt(root: Path, kind: str) -> Path:
    """Damage record 00009 at 100 Hz in one way and return the file the error must name."""
    stem = root / "records100/00000/00009_lr"
    dat, hea = stem.with_suffix(".dat"), stem.with_suffix(".hea")
    if kind == "truncated":
        dat.write_bytes(dat.read_bytes()[:5000])
        return dat
    if kind == "header":
        hea.write_text("00009_lr twelve leads please\n")
        return hea
    d = np.fromfile(dat, dtype="<i2")
    d[123] = -32768  # WFDB's missing-sample value for format 16 reads back as NaN
    d.tofile(dat)
    return dat


@pytest.mark.parametrize(("kind", "words", "workers"), [
    ("truncated", "truncated", 1), ("header", "does not parse", 1), ("nan", "NaN", 1),
    ("truncated", "truncated", 2),  # raised in a worker process, re-raised in the parent
])
def test_bad_record_is_named(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             kind: str, words: str, workers: int) -> None:
    monkeypatch.setattr(cache_mod, "CHUNK", 8)
    monkeypatch.setattr(cache_mod, "MP_CONTEXT", "fork")  # the spawn path is tested above; fork is quick
    bad = corrupt(tiny, kind)
    with pytest.raises(DataError) as err:
        open_ptbxl(tiny, cache_dir=tmp_path, workers=workers)
    message = str(err.value)
    assert "\n" not in message and str(bad) in message and words in message
    assert [p.name for p in tmp_path.iterdir() if p.suffix in (".npy", ".json")] == []  # nothing half-written


@pytest.mark.real
def test_real_cache_roundtrip(real_root: Path, real_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = open_ptbxl(real_root, cache_dir=real_cache)
    n = len(data.meta)
    assert data.signals.shape == (n, 12, 1000) and np.isfinite(data.std).all() and (data.std > 0).all()
    for row in (0, n // 2, n - 1):
        x, _ = wfdb.rdsamp(str(real_root / data.meta["filename_lr"].iloc[row]))
        np.testing.assert_allclose(data.signals[row], x.T, rtol=2**-10, atol=1e-4)
    forbid_wfdb(monkeypatch)
    again = open_ptbxl(real_root, cache_dir=real_cache)  # reads no WFDB file (forbidden above)
    assert again.cache_path == data.cache_path


def test_pin_cache_dir_keeps_a_relative_cache_where_it_was_named(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A process started in another folder (a Ray trial) finds the cache the relative path named here."""
    from ssrl.data import default_cache_dir, pin_cache_dir

    (tmp_path / "here").mkdir()
    (tmp_path / "trial").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    monkeypatch.setenv("SSRL_CACHE_DIR", "cache")
    pin_cache_dir()
    monkeypatch.chdir(tmp_path / "trial")
    assert default_cache_dir() == tmp_path / "here" / "cache"
    monkeypatch.setenv("SSRL_CACHE_DIR", "~/ssrl-cache")
    assert default_cache_dir() == Path.home() / "ssrl-cache"  # ~ is the user's home, not a folder named ~
    monkeypatch.delenv("SSRL_CACHE_DIR")
    pin_cache_dir()  # unset stays unset: the default under the home folder
    assert "SSRL_CACHE_DIR" not in os.environ and default_cache_dir() == Path.home() / ".cache" / "ssrl"
