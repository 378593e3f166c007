"""The predictions file: trials in one ecg_id order, float16, and cells re-scored from it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from ssrl.report.rescore import compare, main, rescore, write_predictions


def _trial(track, seed, ids, y, prob, **keys):
    return {"track": track, "seed": seed, "method": keys.get("method"), "fraction": None, "n_labelled": 10,
            "bn_stats": keys.get("bn_stats", "precise"), "ecg_id": ids, "y": y, "prob": prob,
            "classes": np.array(["A", "B", "C"])}


def test_trials_are_aligned_by_ecg_id_and_rescored(tmp_path, capsys):
    rng = np.random.default_rng(0)
    ids, y = np.array([11, 12, 13, 14, 15, 16]), np.array([0, 1, 2, 0, 1, 2])
    p1, p2 = rng.dirichlet(np.ones(3), 6), rng.dirichlet(np.ones(3), 6)
    perm = np.array([5, 3, 0, 1, 4, 2])  # the second trial lists the same records in another order
    path = write_predictions(tmp_path / "p.npz", "test_macro_f1",
                             [_trial("scratch", 1, ids, y, p1), _trial("ssl", 1, ids[perm], y[perm], p2[perm],
                                                                       method="simclr")])
    with np.load(path) as z:
        assert z["prob"].dtype == np.float32 and z["prob"].shape == (2, 6, 3)
        np.testing.assert_allclose(z["prob"][1], p2, rtol=1e-6)  # back in the first trial's order
    metric, rows = rescore(path)
    assert metric == "test_macro_f1" and [r["track"] for r in rows] == ["scratch", "ssl"]
    for row, p in zip(rows, (p1, p2)):
        assert row["test_macro_f1"] == pytest.approx(f1_score(y, p.argmax(1), average="macro", labels=[0, 1, 2],
                                                              zero_division=0))
    results = {"cells": [{"track": r["track"], "method": r["method"], "n_labelled": 10, "bn_stats": "precise",
                          "per_seed": [{"seed": 1, "test_macro_f1": r["test_macro_f1"]}]} for r in rows]}
    assert compare(rows, results, metric) == []
    (tmp_path / "r.json").write_text(json.dumps(results))
    assert main([str(path), "--results", str(tmp_path / "r.json")]) == 0
    results["cells"][1]["per_seed"][0]["test_macro_f1"] += 1e-6  # a value the probabilities do not give
    (tmp_path / "r.json").write_text(json.dumps(results))
    assert main([str(path), "--results", str(tmp_path / "r.json")]) == 1
    assert "MISMATCH ('ssl', 'simclr', 10, 'precise', 1)" in capsys.readouterr().out


def test_other_test_records_are_refused(tmp_path):
    y = np.array([0, 1, 2])
    with pytest.raises(ValueError, match="test records differ"):
        write_predictions(tmp_path / "p.npz", "test_macro_f1", [
            _trial("scratch", 1, np.array([1, 2, 3]), y, np.eye(3)), _trial("scratch", 2, np.array([1, 2, 4]), y,
                                                                              np.eye(3))])
    assert not (tmp_path / "p.npz").exists()


def test_a_file_that_is_not_a_predictions_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip")
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: not a predictions file")
