"""Merging runs of one benchmark: cells pair by seed across runs, predictions join, and mismatched runs are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import Y, fewshot_run

from ssrl.report.merge import main, merge, merge_predictions
from ssrl.report.rescore import compare, rescore


def test_a_later_control_pairs_with_an_earlier_run(tmp_path, capsys):
    a = fewshot_run(tmp_path, "deep", [("scratch", 70)])
    b = fewshot_run(tmp_path, "controls", [("hrv_logreg", 70), ("hr_rule", 0)], shuffle=3)
    out = tmp_path / "merged.json"
    assert main([str(a[0]), str(b[0]), "--predictions", str(a[1]), str(b[1]), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    scratch = next(c for c in res["cells"] if c["track"] == "scratch")
    assert scratch["vs_hrv_logreg"]["n_pairs"] == 2 and "vs_hr_rule" in scratch
    assert [m["run_id"] for m in res["merged_from"]] == ["deep", "controls"] and res["n_runs"] == 6
    assert res["multiplicity"]["families"]["paired metric contrasts"] >= 3
    metric, rows = rescore(tmp_path / "merged-predictions.npz")
    assert len(rows) == 6 and compare(rows, res, metric) == []  # every seed re-scores from the joined file
    assert main([str(a[0]), str(b[0]), "--predictions", str(a[1]), str(b[1]), "--out", str(out)]) == 2
    assert "nothing was overwritten" in capsys.readouterr().err


def test_runs_that_cannot_pair_are_refused(tmp_path):
    a, b = fewshot_run(tmp_path, "a", [("scratch", 70)]), fewshot_run(tmp_path, "b", [("scratch", 70)])
    with pytest.raises(ValueError, match="both hold the cell"):
        merge([json.loads(a[0].read_text()), json.loads(b[0].read_text())], ["a", "b"])
    c = fewshot_run(tmp_path, "c", [("hrv_logreg", 70)])
    other = json.loads(c[0].read_text())
    other["trivial_baseline"]["class"] = "AFIB"
    with pytest.raises(ValueError, match="not the same test fold"):
        merge([json.loads(a[0].read_text()), other], ["a", "c"])
    d = fewshot_run(tmp_path, "d", [("hrv_logreg", 70)], y=(Y + 1) % 5)
    with pytest.raises(ValueError, match="test labels differ"):
        merge_predictions([a[1], d[1]])


def test_replace_takes_a_re_run_cell_from_the_later_run(tmp_path):
    """A control fixed and re-run: --replace drops the earlier run's cell and its trials, and says so."""
    a = fewshot_run(tmp_path, "deep", [("scratch", 70), ("hrv_logreg", 70)])
    b = fewshot_run(tmp_path, "fixed", [("hrv_logreg", 70)], shuffle=5)
    out = tmp_path / "m.json"
    assert main([str(a[0]), str(b[0]), "--predictions", str(a[1]), str(b[1]), "--out", str(out)]) == 2
    assert main([str(a[0]), str(b[0]), "--predictions", str(a[1]), str(b[1]), "--out", str(out), "--replace"]) == 0
    res = json.loads(out.read_text())
    fixed = json.loads(b[0].read_text())
    hrv = next(c for c in res["cells"] if c["track"] == "hrv_logreg")
    assert hrv["per_seed"] == next(c for c in fixed["cells"] if c["track"] == "hrv_logreg")["per_seed"]
    assert res["merged_from"][0]["replaced"] == [["hrv_logreg", None, 70, None]] and res["n_runs"] == 4
    metric, rows = rescore(tmp_path / "m-predictions.npz")
    assert len(rows) == 4 and compare(rows, res, metric) == []  # the earlier run's hrv trials are gone


def _as_old(results: Path, predictions: Path) -> None:
    """Rewrite a run as one written before n_labelled_used: the realised count only as n_labelled."""
    res = json.loads(results.read_text())
    for cell in res["cells"]:
        cell.pop("n_labelled_used")
        for r in cell["per_seed"]:
            r.pop("n_labelled_used", None)
    results.write_text(json.dumps(res))
    with np.load(predictions, allow_pickle=False) as z:
        parts = {k: z[k] for k in z.files}
    meta = json.loads(str(parts["meta"]))
    del meta["n_labelled_used"]
    np.savez_compressed(predictions, **{**parts, "meta": np.asarray(json.dumps(meta))})


def test_a_run_from_before_n_labelled_used_merges_with_a_new_one(tmp_path):
    a = fewshot_run(tmp_path, "old", [("scratch", 70)])
    b = fewshot_run(tmp_path, "new", [("hrv_logreg", 70)])
    _as_old(*a)
    out = tmp_path / "merged.json"
    assert main([str(a[0]), str(b[0]), "--predictions", str(a[1]), str(b[1]), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [(c["track"], c["n_labelled"], c["n_labelled_used"]) for c in res["cells"]] == [
        ("scratch", 70, 70), ("hrv_logreg", 70, 70)]
    assert all(r["n_labelled_used"] == 70 for c in res["cells"] for r in c["per_seed"])
    metric, rows = rescore(tmp_path / "merged-predictions.npz")
    assert [r["n_labelled_used"] for r in rows] == [70] * 4 and compare(rows, res, metric) == []


def test_runs_of_two_methods_pair_and_the_file_accounts_for_both_encoders(tmp_path):
    """One method per run, each with its own encoder per seed: the merged file compares the methods seed by
    seed and says, per method, which seeds had an encoder of their own."""
    pre = {"selection": "last", "per_seed": True, "seeds": [42, 52]}
    a = fewshot_run(tmp_path, "masked", [("scratch", 70), ("ssl", 70)], method="masked", pretraining={"methods": ["masked"], **pre})
    b = fewshot_run(tmp_path, "simclr", [("scratch", 70), ("ssl", 70)], method="simclr", pretraining={"methods": ["simclr"], **pre})
    out = tmp_path / "merged.json"
    assert main([str(a[0]), str(b[0]), "--predictions", str(a[1]), str(b[1]), "--out", str(out), "--replace"]) == 0
    res = json.loads(out.read_text())
    assert res["pretraining"] == {"methods": ["masked", "simclr"], "selection": "last", "per_seed": True,
                                  "seeds": [42, 52], "by_method": {"masked": pre, "simclr": pre}}
    ssl = {c["method"]: c for c in res["cells"] if c["track"] == "ssl"}
    assert set(ssl) == {"masked", "simclr"} and ssl["simclr"]["between_methods"]["masked"]["n_pairs"] == 2
    assert ssl["simclr"]["vs_scratch"]["n_pairs"] == 2  # against the later run's scratch, which replaced the first's
    shared = {"methods": ["masked"], "selection": "last", "per_seed": False, "seeds": [42]}
    merged = merge([json.loads(a[0].read_text()) | {"pretraining": shared}, json.loads(b[0].read_text())],
                   ["a", "b"], replace=True)
    assert merged["pretraining"]["per_seed"] is False and merged["pretraining"]["by_method"]["masked"]["seeds"] == [42]


def test_add_seeds_grows_a_benchmark_seed_by_seed(tmp_path):
    """A later run of one protocol on new seeds (with its controls re-run on the old ones, identically): the
    cells hold every seed once, contrasts pair over all of them, and the predictions re-score the whole file."""
    pre = {"methods": ["masked"], "selection": "last", "per_seed": True}
    a = fewshot_run(tmp_path, "first", [("scratch", 70), ("ssl", 70)], method="masked", pretraining={**pre, "seeds": [42, 52]})
    b = fewshot_run(tmp_path, "more", [("scratch", 70), ("ssl", 70)], method="masked", seeds=(72, 82),
             pretraining={**pre, "seeds": [72, 82]}, shuffle=4, rerun_of="first")
    c = fewshot_run(tmp_path, "controls", [("scratch", 70)], seeds=(42, 52, 72), rerun_of="first")  # a re-run of 3 seeds
    out = tmp_path / "grown.json"
    args = [str(a[0]), str(b[0]), str(c[0]), "--predictions", str(a[1]), str(b[1]), str(c[1]), "--out", str(out)]
    assert main(args) == 2  # the same cells: an error without a flag
    assert main([*args, "--add-seeds"]) == 0
    res = json.loads(out.read_text())
    cells = {c["track"]: c for c in res["cells"]}
    assert cells["scratch"]["seeds"] == cells["ssl"]["seeds"] == [42, 52, 72, 82] and res["n_runs"] == 8
    assert cells["ssl"]["vs_scratch"]["n_pairs"] == 4
    first = {r["seed"]: r for c in json.loads(a[0].read_text())["cells"] for r in c["per_seed"] if c["track"] == "ssl"}
    assert [r["test_macro_f1"] for r in cells["ssl"]["per_seed"][:2]] == [first[42]["test_macro_f1"], first[52]["test_macro_f1"]]
    assert res["pretraining"]["by_method"]["masked"]["seeds"] == [42, 52, 72, 82]
    assert res["merged_from"][0]["repeated"] == [["scratch", None, 70, "precise", 42], ["scratch", None, 70, "precise", 52]]
    assert res["merged_from"][1]["repeated"] == [["scratch", None, 70, "precise", 72]]
    metric, rows = rescore(tmp_path / "grown-predictions.npz")
    assert len(rows) == 8 and compare(rows, res, metric) == []  # each repeated trial joined once


def test_add_seeds_refuses_what_is_not_one_protocol(tmp_path):
    a = fewshot_run(tmp_path, "first", [("scratch", 70)])
    b = fewshot_run(tmp_path, "other", [("scratch", 70)], seeds=(52, 62))  # seed 52 scored otherwise: not a re-run
    load = lambda p: json.loads(p[0].read_text())  # noqa: E731
    with pytest.raises(ValueError, match="both hold seed 52 .* not a re-run"):
        merge([load(a), load(b)], ["a", "b"], add_seeds=True)
    c = fewshot_run(tmp_path, "later", [("scratch", 70)], seeds=(62,))
    for edit, msg in [({"scale": "cpu"}, "scale 'cpu' differs"),
                      ({"precision": {"requested": "auto", "used": ["bf16"]}}, "precision"),
                      ({"pretraining": {"methods": [], "per_seed": False}}, None)]:
        runs = [load(a) | {"pretraining": {"methods": ["masked"], "per_seed": True, "selection": "last"}},
                load(c) | edit]
        if msg:
            with pytest.raises(ValueError, match=msg):
                merge(runs, ["a", "c"], add_seeds=True)
        else:  # no method in common: nothing to compare
            assert merge(runs, ["a", "c"], add_seeds=True)["cells"][0]["seeds"] == [42, 52, 62]
    shared = load(c) | {"pretraining": {"methods": ["masked"], "per_seed": False, "selection": "last"}}
    with pytest.raises(ValueError, match="method masked was pretrained otherwise"):
        merge([load(a) | {"pretraining": {"methods": ["masked"], "per_seed": True, "selection": "last"}}, shared],
              ["a", "c"], add_seeds=True)
    with pytest.raises(ValueError, match="give one"):
        merge([load(a), load(c)], ["a", "c"], replace=True, add_seeds=True)
