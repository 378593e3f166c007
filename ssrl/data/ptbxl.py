"""PTB-XL metadata: reading and validating the tree, task labels and fold splits (no signals)."""

from __future__ import annotations

import ast
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

DATABASE_CSV = "ptbxl_database.csv"
STATEMENTS_CSV = "scp_statements.csv"
SYNTHETIC_MARKER = "SYNTHETIC"
RATE_COLUMNS = {100: "filename_lr", 500: "filename_hr"}
STATEMENT_COLUMNS = ("diagnostic", "diagnostic_class", "rhythm")
SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")
RHYTHM5 = ("SR", "AFIB", "STACH", "SARRH", "SBRAD")
TASK_CLASSES = {"superdiagnostic": SUPERCLASSES, "rhythm5": RHYTHM5}  # each task's classes, in label order
TASKS = tuple(TASK_CLASSES)
SPLITS = {"train": tuple(range(1, 9)), "val": (9,), "test": (10,)}
TRAIN_FOLDS = SPLITS["train"]
# The leads of every PTB-XL record, in the order its WFDB files (and so the signal cache) hold them
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


class DataError(ValueError):
    """Bad PTB-XL input found when the data is opened; the message is one line naming the file."""


@dataclass(frozen=True, eq=False, repr=False)
class PTBXLMeta:
    """Validated PTB-XL metadata: one row per record present on disk at `sampling_rate`."""

    root: Path
    sampling_rate: int
    meta: pd.DataFrame  # ptbxl_database rows, index ecg_id (sorted), scp_codes parsed to dicts
    statements: pd.DataFrame  # scp_statements, index = statement code
    name: str  # "ptbxl" | "synthetic"
    n_listed: int  # rows in ptbxl_database.csv (more than len(meta) on a partial tree)

    def __repr__(self) -> str:
        """Short summary instead of the whole table (and signals)."""
        return f"{type(self).__name__}({str(self.root)!r}, {self.sampling_rate} Hz, {len(self.meta)} records, {self.name})"

    @property
    def folds(self) -> np.ndarray:
        """strat_fold of every row, (N,) int64."""
        return self.meta["strat_fold"].to_numpy(np.int64)

    @property
    def record_names(self) -> list[str]:
        """Record paths relative to root without extension, e.g. records100/00000/00001_lr."""
        return self.meta[RATE_COLUMNS[self.sampling_rate]].tolist()


def _one_line(exc: BaseException) -> str:
    """First line of an exception message, with its type."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _read_csv(path: Path, required: tuple[str, ...], **kwargs) -> pd.DataFrame:
    """Read one metadata CSV, raising DataError for a missing or unparsable file or column."""
    if not path.is_file():
        raise DataError(f"{path}: missing; a PTB-XL root holds {DATABASE_CSV} and {STATEMENTS_CSV}, restore it")
    try:
        df = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: not a readable CSV ({_one_line(e)}); restore the original file") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r}; restore the PTB-XL file (schema 1.0.3)")
    return df


# A plain PTB-XL cell, e.g. {'NORM': 100.0, 'SR': 0.0}: keys without quotes or backslashes, decimal numbers.
_PLAIN_CODES = re.compile(r"\{(?:'[^'\"\\]*': -?\d+(?:\.\d+)?(?:, '[^'\"\\]*': -?\d+(?:\.\d+)?)*)?\}")


def literal_codes(text: str) -> object:
    """ast.literal_eval of one scp_codes cell; plain cells take json.loads, which gives the same dict 10x faster."""
    if isinstance(text, str) and _PLAIN_CODES.fullmatch(text):
        try:  # swapping ' for " only touches key delimiters here, and both grammars read these numbers alike
            return json.loads(text.replace("'", '"'))
        except ValueError:  # e.g. 00.5: a Python literal but not JSON
            pass
    return ast.literal_eval(text)


def _parse_codes(path: Path, meta: pd.DataFrame) -> list[dict]:
    """scp_codes strings parsed as Python literals, each a dict (shared between equal strings: read-only)."""
    texts = meta["scp_codes"].tolist()
    parsed: dict[str, dict] = {}
    for text in dict.fromkeys(texts):  # 21,799 rows hold ~5,500 distinct strings
        try:
            codes = literal_codes(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            codes = None
        if not isinstance(codes, dict):
            ecg_id = meta.index[texts.index(text)]
            raise DataError(f"{path}: scp_codes of ecg_id {ecg_id} is not a dict literal ({text!r}); fix that row")
        parsed[text] = codes
    return [parsed[text] for text in texts]


def _read_database(path: Path, rate_column: str) -> pd.DataFrame:
    """ptbxl_database.csv indexed by ecg_id, checked and with scp_codes parsed."""
    meta = _read_csv(path, ("ecg_id", "scp_codes", "strat_fold", rate_column))
    ids = pd.to_numeric(meta["ecg_id"], errors="coerce")
    if ids.isna().any() or ids.duplicated().any() or (ids % 1 != 0).any():
        raise DataError(f"{path}: column 'ecg_id' must hold unique integers; restore the file")
    meta = meta.set_index(ids.astype(np.int64).rename("ecg_id")).drop(columns="ecg_id").sort_index()
    folds = pd.to_numeric(meta["strat_fold"], errors="coerce")
    if not folds.isin(range(1, 11)).all():
        bad = meta.index[~folds.isin(range(1, 11))][0]
        raise DataError(f"{path}: strat_fold of ecg_id {bad} is not an integer 1-10; restore the file")
    meta["strat_fold"] = folds.astype(np.int64)
    empty = meta[rate_column].isna() | (meta[rate_column].astype(str).str.strip() == "")
    if empty.any():
        bad = meta.index[empty][0]
        raise DataError(f"{path}: {rate_column} of ecg_id {bad} is empty; restore the file")
    meta["scp_codes"] = _parse_codes(path, meta)
    return meta


def _present(root: Path, names: list[str], csv: Path, rate: int) -> np.ndarray:
    """Mask of listed records whose folder exists; DataError when a present folder lacks a listed file."""
    folders: dict[str, set[str] | None] = {}
    mask = np.zeros(len(names), dtype=bool)
    missing: list[str] = []
    for i, name in enumerate(names):
        parent, _, stem = name.rpartition("/")
        if parent not in folders:  # one scandir per folder, no stat per file
            try:
                with os.scandir(root / parent) as it:
                    folders[parent] = {e.name for e in it}
            except (FileNotFoundError, NotADirectoryError):
                folders[parent] = None
        files = folders[parent]
        if files is not None:
            mask[i] = True
            if stem + ".hea" not in files or stem + ".dat" not in files:
                missing += [name + ext for ext in (".hea", ".dat") if stem + ext not in files]
    if not mask.any():
        top = names[0].split("/")[0] if names else f"records{rate}"
        raise DataError(f"{root / top}: no records for sampling rate {rate} ({csv.name} lists them there); "
                        f"use a rate whose records exist (e.g. --sampling-rate 100) or unpack them")
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{root / missing[0]}: listed in {csv.name} but missing{more}; "
                        f"restore the record or rebuild the tree")
    return mask


def read_ptbxl(root: str | Path, sampling_rate: int = 100) -> PTBXLMeta:
    """Read and validate the PTB-XL metadata and record listing under root (no signals are read)."""
    root = Path(root)
    if sampling_rate not in RATE_COLUMNS:
        raise DataError(f"{root}: sampling rate {sampling_rate} is not a PTB-XL rate; use 100 or 500")
    if not root.is_dir():
        raise DataError(f"{root}: PTB-XL root not found; pass the folder holding {DATABASE_CSV} "
                        f"(or write one with `python -m ssrl.data synth DIR`)")
    column = RATE_COLUMNS[sampling_rate]
    db_path, st_path = root / DATABASE_CSV, root / STATEMENTS_CSV
    meta = _read_database(db_path, column)
    statements = _read_csv(st_path, STATEMENT_COLUMNS, index_col=0)
    mask = _present(root, meta[column].astype(str).tolist(), db_path, sampling_rate)
    if not mask.all():
        log.warning("%s: %d of %d listed records lie in absent record folders (partial tree); using %d",
                    root, (~mask).sum(), len(mask), mask.sum())
    name = "synthetic" if (root / SYNTHETIC_MARKER).exists() else "ptbxl"
    return PTBXLMeta(root, sampling_rate, meta[mask], statements, name, len(mask))


@dataclass(frozen=True, eq=False)
class TaskLabels:
    """Labels of the records that qualify for one task; rows index the ECGData rows."""

    task: str
    classes: tuple[str, ...]
    multilabel: bool
    rows: np.ndarray  # (n,) int64 row indices into ECGData.signals / meta
    y: np.ndarray  # (n, C) float32 multi-hot if multilabel, else (n,) int64 class index
    folds: np.ndarray  # (n,) int64 strat_fold

    def __len__(self) -> int:
        """Number of qualifying records."""
        return len(self.rows)

    def take(self, positions: np.ndarray) -> TaskLabels:
        """The records at the given positions (e.g. a sampler's output)."""
        p = np.asarray(positions, dtype=np.int64)
        return TaskLabels(self.task, self.classes, self.multilabel, self.rows[p], self.y[p], self.folds[p])

    def split(self, name: str) -> TaskLabels:
        """The records of split `train` (folds 1-8), `val` (9) or `test` (10)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose from {tuple(SPLITS)}")
        return self.take(np.flatnonzero(np.isin(self.folds, SPLITS[name])))

    def per_class(self) -> dict[str, int]:
        """Number of records carrying each class."""
        counts = self.y.sum(0) if self.multilabel else np.bincount(self.y, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts)}


def _superdiagnostic(data: PTBXLMeta) -> np.ndarray:
    """(N, 5) float32 multi-hot: class c when any scp_codes key is diagnostic with diagnostic_class c."""
    st = data.statements
    diagnostic = pd.to_numeric(st["diagnostic"], errors="coerce") == 1
    col = {c: i for i, c in enumerate(SUPERCLASSES)}
    code_col = {code: col[cls] for code, cls in st.loc[diagnostic, "diagnostic_class"].items() if cls in col}
    y = np.zeros((len(data.meta), len(SUPERCLASSES)), dtype=np.float32)
    for r, codes in enumerate(data.meta["scp_codes"]):
        for code in codes:  # presence counts, likelihood ignored
            if code in code_col:
                y[r, code_col[code]] = 1.0
    return y


def _rhythm5(data: PTBXLMeta) -> np.ndarray:
    """(N,) int64 index into RHYTHM5 when exactly one of the five is a key, else -1."""
    col = {c: i for i, c in enumerate(RHYTHM5)}
    y = np.full(len(data.meta), -1, dtype=np.int64)
    for r, codes in enumerate(data.meta["scp_codes"]):
        hits = [col[c] for c in codes if c in col]
        if len(hits) == 1:
            y[r] = hits[0]
    return y


def task_labels(data: PTBXLMeta, task: str) -> TaskLabels:
    """Labels of `superdiagnostic` (multi-label) or `rhythm5` (single label) per docs/PROTOCOL.md section 2."""
    if task == "superdiagnostic":
        y = _superdiagnostic(data)
        rows = np.flatnonzero(y.any(axis=1))
        return TaskLabels(task, SUPERCLASSES, True, rows, y[rows], data.folds[rows])
    if task == "rhythm5":
        y = _rhythm5(data)
        rows = np.flatnonzero(y >= 0)
        return TaskLabels(task, RHYTHM5, False, rows, y[rows], data.folds[rows])
    raise ValueError(f"unknown task {task!r}; choose from {TASKS}")


def pretrain_rows(data: PTBXLMeta) -> np.ndarray:
    """Every row of folds 1-8 (the unlabelled pretraining pool), (n,) int64."""
    return np.flatnonzero(np.isin(data.folds, TRAIN_FOLDS))


def describe(data: PTBXLMeta) -> dict:
    """Record, pool and per-split class counts of every task, as a JSON-ready dict."""
    tasks = {}
    for task in TASKS:
        labels = task_labels(data, task)
        splits = {}
        for split in SPLITS:
            part = labels.split(split)
            splits[split] = {"n": len(part), "per_class": part.per_class()}
        tasks[task] = {"classes": list(labels.classes), "splits": splits}
    return {"root": str(data.root), "sampling_rate": data.sampling_rate, "n_records": len(data.meta),
            "pretrain_pool": len(pretrain_rows(data)), "tasks": tasks}
