"""Metadata, validation, label semantics and splits of ssrl.data.ptbxl."""

from __future__ import annotations

import ast
import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssrl.data import (
    RHYTHM5,
    SUPERCLASSES,
    DataError,
    describe,
    pretrain_rows,
    read_ptbxl,
    task_labels,
)
from ssrl.data.ptbxl import literal_codes


def hand_labels(root: Path, ecg_ids: list[int]) -> tuple[dict[int, set[str]], dict[int, str]]:
    """Independent reference: superclasses and the single rhythm5 label per ecg_id, via the csv module."""
    with open(root / "scp_statements.csv", newline="") as f:
        rows = list(csv.reader(f))
    head = rows[0]
    diag, cls, rhy = head.index("diagnostic"), head.index("diagnostic_class"), head.index("rhythm")
    code_class = {r[0]: r[cls] for r in rows[1:] if r[diag] not in ("", "0", "0.0")}
    rhythm_codes = {r[0] for r in rows[1:] if r[rhy] not in ("", "0", "0.0")}
    assert set(RHYTHM5) <= rhythm_codes  # the five are rhythm statements
    wanted, supers, rhythm = set(ecg_ids), {}, {}
    with open(root / "ptbxl_database.csv", newline="") as f:
        for row in csv.DictReader(f):
            i = int(row["ecg_id"])
            if i not in wanted:
                continue
            keys = ast.literal_eval(row["scp_codes"]).keys()
            supers[i] = {code_class[k] for k in keys if k in code_class} & set(SUPERCLASSES)
            hits = [k for k in keys if k in RHYTHM5]
            if len(hits) == 1:
                rhythm[i] = hits[0]
    return supers, rhythm


def check_against_hand(root: Path) -> None:
    """task_labels agrees with the hand computation on every present record."""
    data = read_ptbxl(root)
    ids = data.meta.index.tolist()
    supers, rhythm = hand_labels(root, ids)
    sup = task_labels(data, "superdiagnostic")
    assert [ids[r] for r in sup.rows] == [i for i in ids if supers[i]]
    for r, y in zip(sup.rows, sup.y):
        assert {c for c, v in zip(SUPERCLASSES, y) if v} == supers[ids[r]]
    rhy = task_labels(data, "rhythm5")
    assert {ids[r]: RHYTHM5[k] for r, k in zip(rhy.rows, rhy.y)} == rhythm


def test_read_synthetic_tree(synth_root: Path) -> None:
    data = read_ptbxl(synth_root)
    assert data.name == "synthetic" and data.sampling_rate == 100
    assert len(data.meta) == data.n_listed == 400
    assert data.meta.index.is_monotonic_increasing and data.meta.index.is_unique
    assert all(isinstance(c, dict) for c in data.meta["scp_codes"])
    assert set(np.unique(data.folds)) <= set(range(1, 11))
    assert data.record_names[0] == data.meta["filename_lr"].iloc[0]


def test_labels_match_hand_computation(synth_root: Path) -> None:
    check_against_hand(synth_root)


def test_label_semantics_on_crafted_rows(tiny: Path, edit_database) -> None:
    edit_database(tiny, strat_fold={1: 3, 2: 3, 3: 3, 4: 3, 5: 3, 6: 3}, scp_codes={
        1: "{'SR': 0.0}",  # no diagnostic statement: unlabelled, still pretraining
        2: "{'IMI': 0.0, 'SR': 0.0}",  # likelihood 0 still counts
        3: "{'NORM': 100.0, 'IRBBB': 50.0, 'AFIB': 0.0}",  # two superclasses
        4: "{'NORM': 100.0, 'SR': 0.0, 'SBRAD': 0.0}",  # two rhythm5 statements: not rhythm5
        5: "{'LVH': 100.0, 'PACE': 0.0}",  # a rhythm outside the five
        6: "{'ABQRS': 0.0, 'STACH': 0.0}",  # ABQRS is a form statement, not diagnostic
    })
    data = read_ptbxl(tiny)
    row = {i: r for r, i in enumerate(data.meta.index)}
    sup, rhy = task_labels(data, "superdiagnostic"), task_labels(data, "rhythm5")
    sup_of = {int(r): {c for c, v in zip(SUPERCLASSES, y) if v} for r, y in zip(sup.rows, sup.y)}
    rhy_of = {int(r): RHYTHM5[k] for r, k in zip(rhy.rows, rhy.y)}
    assert row[1] not in sup_of and row[6] not in sup_of
    assert sup_of[row[2]] == {"MI"} and sup_of[row[3]] == {"NORM", "CD"} and sup_of[row[5]] == {"HYP"}
    assert rhy_of[row[1]] == rhy_of[row[2]] == "SR" and rhy_of[row[3]] == "AFIB" and rhy_of[row[6]] == "STACH"
    assert row[4] not in rhy_of and row[5] not in rhy_of
    assert {row[1], row[6]} <= set(pretrain_rows(data).tolist())
    assert sup.classes == ("NORM", "MI", "STTC", "CD", "HYP") and sup.y.dtype == np.float32
    assert rhy.classes == ("SR", "AFIB", "STACH", "SARRH", "SBRAD") and rhy.y.dtype == np.int64


@pytest.mark.parametrize("text", ["{}", "{'NORM': 100.0, 'SR': 0.0}", "{'LAO/LAE': 50.0, 'A': -0.0}",
                                  "{'A': 00.5}", "{'A': 1, 'A': 2}", "{'A\"': 1}", "{'A': 1e3}", "{'ä': 7}"])
def test_literal_codes_equals_literal_eval(text: str) -> None:
    got, want = literal_codes(text), ast.literal_eval(text)
    assert got == want and [type(v) for v in got.values()] == [type(v) for v in want.values()]


def test_literal_codes_on_every_row(synth_root: Path) -> None:
    with open(synth_root / "ptbxl_database.csv", newline="") as f:
        texts = [row["scp_codes"] for row in csv.DictReader(f)]
    assert [literal_codes(t) for t in texts] == [ast.literal_eval(t) for t in texts]


def test_splits_follow_folds(synth_root: Path) -> None:
    data = read_ptbxl(synth_root)
    labels = task_labels(data, "superdiagnostic")
    parts = {name: labels.split(name) for name in ("train", "val", "test")}
    assert set(np.unique(parts["train"].folds)) <= set(range(1, 9))
    assert set(parts["val"].folds) == {9} and set(parts["test"].folds) == {10}
    rows = np.concatenate([p.rows for p in parts.values()])
    assert sorted(rows.tolist()) == labels.rows.tolist()  # disjoint and complete
    assert (pretrain_rows(data) == np.flatnonzero(data.folds <= 8)).all()
    with pytest.raises(ValueError, match="unknown split"):
        labels.split("dev")
    with pytest.raises(ValueError, match="unknown task"):
        task_labels(data, "diagnostic")


def test_take_and_per_class(synth_root: Path) -> None:
    labels = task_labels(read_ptbxl(synth_root), "superdiagnostic")
    part = labels.take(np.array([0, 2]))
    assert part.rows.tolist() == labels.rows[[0, 2]].tolist()
    assert list(part.per_class().values()) == labels.y[[0, 2]].sum(0).astype(int).tolist()


def test_describe_counts(synth_root: Path) -> None:
    data = read_ptbxl(synth_root)
    out = describe(data)
    assert out["n_records"] == 400 and out["pretrain_pool"] == int((data.folds <= 8).sum())
    for task in ("superdiagnostic", "rhythm5"):
        labels = task_labels(data, task)
        total = sum(s["n"] for s in out["tasks"][task]["splits"].values())
        assert total == len(labels)
        train = labels.split("train").per_class()
        assert out["tasks"][task]["splits"]["train"]["per_class"] == train


def one_line(err: pytest.ExceptionInfo) -> str:
    """The message of a DataError, checked to be a single line."""
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        read_ptbxl(tmp_path / "nowhere")
    assert "nowhere" in one_line(err) and "not found" in one_line(err)


@pytest.mark.parametrize("name", ["ptbxl_database.csv", "scp_statements.csv"])
def test_missing_csv(tiny: Path, name: str) -> None:
    (tiny / name).unlink()
    with pytest.raises(DataError) as err:
        read_ptbxl(tiny)
    assert str(tiny / name) in one_line(err) and "missing" in one_line(err)


@pytest.mark.parametrize(("name", "column"), [("ptbxl_database.csv", "strat_fold"),
                                              ("ptbxl_database.csv", "filename_lr"),
                                              ("scp_statements.csv", "diagnostic_class")])
def test_missing_column(tiny: Path, name: str, column: str) -> None:
    path = tiny / name
    pd.read_csv(path, dtype=str).drop(columns=column).to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        read_ptbxl(tiny)
    assert str(path) in one_line(err) and repr(column) in one_line(err)


def test_listed_record_missing(tiny: Path) -> None:
    (tiny / "records100/00000/00007_lr.dat").unlink()
    with pytest.raises(DataError) as err:
        read_ptbxl(tiny)
    assert str(tiny / "records100/00000/00007_lr.dat") in one_line(err)


def test_rate_without_records(tiny: Path) -> None:
    assert len(read_ptbxl(tiny, sampling_rate=500).meta) == 40
    shutil.rmtree(tiny / "records500")
    with pytest.raises(DataError) as err:
        read_ptbxl(tiny, sampling_rate=500)
    assert str(tiny / "records500") in one_line(err) and "sampling rate 500" in one_line(err)
    with pytest.raises(DataError, match="use 100 or 500"):
        read_ptbxl(tiny, sampling_rate=250)


@pytest.mark.parametrize(("column", "value", "expect"), [
    ("scp_codes", "{'NORM': 100.0", "scp_codes of ecg_id 5"),
    ("scp_codes", "['NORM']", "scp_codes of ecg_id 5"),
    ("strat_fold", "11", "strat_fold of ecg_id 5"),
    ("filename_lr", "", "filename_lr of ecg_id 5"),
])
def test_bad_cells(tiny: Path, edit_database, column: str, value: str, expect: str) -> None:
    edit_database(tiny, **{column: {5: value}})
    with pytest.raises(DataError) as err:
        read_ptbxl(tiny)
    assert expect in one_line(err) and "ptbxl_database.csv" in one_line(err)


def test_unparsable_csv(tiny: Path) -> None:
    (tiny / "scp_statements.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError) as err:
        read_ptbxl(tiny)
    assert "scp_statements.csv" in one_line(err)


def test_partial_tree_drops_absent_folders(tiny: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tiny / "ptbxl_database.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    extra = df.iloc[:3].copy()  # rows of a record folder that was never unpacked
    extra["ecg_id"] = ["5001", "5002", "5003"]
    extra["filename_lr"] = [f"records100/05000/0500{i}_lr" for i in (1, 2, 3)]
    pd.concat([df, extra]).to_csv(path, index=False)
    with caplog.at_level(logging.WARNING):
        data = read_ptbxl(tiny)
    assert data.n_listed == 43 and len(data.meta) == 40 and 5001 not in data.meta.index
    assert "3 of 43" in caplog.text


@pytest.mark.real
def test_real_labels_match_hand_computation(real_root: Path) -> None:
    check_against_hand(real_root)
    with open(real_root / "ptbxl_database.csv", newline="") as f:
        texts = [row["scp_codes"] for row in csv.DictReader(f)]
    assert [literal_codes(t) for t in texts] == [ast.literal_eval(t) for t in texts]


@pytest.mark.real
def test_real_describe(real_root: Path) -> None:
    out = describe(read_ptbxl(real_root))
    n_files = sum(1 for _ in (real_root / "records100").glob("*/*_lr.hea"))
    assert out["n_records"] == n_files > 0
    sup = out["tasks"]["superdiagnostic"]["splits"]
    assert sum(s["n"] for s in sup.values()) <= out["n_records"]
    if out["n_records"] == 21799:  # the full 1.0.3 release: the counts of docs/PROTOCOL.md section 2
        per = {c: sum(s["per_class"][c] for s in sup.values()) for c in SUPERCLASSES}
        assert per == {"NORM": 9516, "MI": 5472, "STTC": 5237, "CD": 4900, "HYP": 2649}
        assert [s["n"] for s in sup.values()] == [17088, 2147, 2159] and out["pretrain_pool"] == 17418
        rhy = out["tasks"]["rhythm5"]["splits"]
        assert [s["n"] for s in rhy.values()] == [16395, 2045, 2047]
        assert rhy["train"]["per_class"] == {"SR": 13403, "AFIB": 1211, "STACH": 661, "SARRH": 614, "SBRAD": 506}
