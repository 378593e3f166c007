"""Publishing a run into docs/results: the local data path left out, the evidence copied and checked, nothing overwritten."""

from __future__ import annotations

import json

from helpers import fewshot_run

from ssrl.report.__main__ import main
from ssrl.report.publish import ROOT
from ssrl.report.rescore import compare, rescore


def _sweep_dir(tmp_path, root="/home/someone/data/PTB-XL"):
    """A sweep's output folder as the runner leaves it: results.json, predictions.npz and the plot."""
    res, pred = fewshot_run(tmp_path, "run", [("scratch", 70), ("hrv_logreg", 70)])
    out = tmp_path / "runs" / "fewshot"
    out.mkdir(parents=True)
    results = json.loads(res.read_text())
    results["dataset"]["root"] = root
    (out / "results.json").write_text(json.dumps(results))
    pred.rename(out / "predictions.npz")
    (out / "fewshot.png").write_bytes(b"\x89PNG plot")
    return out, results


def test_a_sweep_is_published_with_its_probabilities_and_plot_and_no_local_path(tmp_path, capsys):
    run, results = _sweep_dir(tmp_path)
    dest = tmp_path / "docs" / "results"
    dest.mkdir(parents=True)
    assert main(["publish", str(run / "results.json"), "--out", str(dest / "fewshot-x.json")]) == 0
    published = json.loads((dest / "fewshot-x.json").read_text())
    assert published["dataset"]["root"] == ROOT and "/home/someone" not in (dest / "fewshot-x.json").read_text()
    assert {**published, "dataset": results["dataset"]} == results  # nothing else changed
    assert (dest / "fewshot-x-predictions.npz").read_bytes() == (run / "predictions.npz").read_bytes()
    assert (dest / "fewshot-x.png").read_bytes() == b"\x89PNG plot"
    metric, rows = rescore(dest / "fewshot-x-predictions.npz")
    assert len(rows) == 4 and compare(rows, published, metric) == []
    assert "every trial re-scores" in capsys.readouterr().out


def test_a_merged_file_is_published_with_its_predictions_and_no_plot(tmp_path):
    res, pred = fewshot_run(tmp_path, "merged", [("scratch", 70)])
    pred.rename(tmp_path / "merged-predictions.npz")
    assert main(["publish", str(res), "--out", str(tmp_path / "pub.json")]) == 0
    assert sorted(p.name for p in tmp_path.glob("pub*")) == ["pub-predictions.npz", "pub.json"]


def test_an_existing_destination_is_refused_and_kept(tmp_path, capsys):
    run, _ = _sweep_dir(tmp_path)
    (tmp_path / "old-predictions.npz").write_bytes(b"earlier evidence")
    assert main(["publish", str(run / "results.json"), "--out", str(tmp_path / "old.json")]) == 2
    err = capsys.readouterr().err
    assert "old-predictions.npz already there" in err and err.count("\n") == 1
    assert (tmp_path / "old-predictions.npz").read_bytes() == b"earlier evidence"
    assert not (tmp_path / "old.json").exists() and not (tmp_path / "old.png").exists()


def test_numbers_that_do_not_come_out_of_the_probabilities_are_not_published(tmp_path, capsys):
    run, results = _sweep_dir(tmp_path)
    results["cells"][0]["per_seed"][0]["test_macro_f1"] += 0.01  # a hand-edited cell
    (run / "results.json").write_text(json.dumps(results))
    assert main(["publish", str(run / "results.json"), "--out", str(tmp_path / "pub.json")]) == 2
    assert "1 of 4 trials re-score otherwise" in capsys.readouterr().err
    assert list(tmp_path.glob("pub*")) == []
    (run / "predictions.npz").unlink()
    assert main(["publish", str(run / "results.json"), "--out", str(tmp_path / "pub.json")]) == 2
    assert "predictions.npz is missing" in capsys.readouterr().err and list(tmp_path.glob("pub*")) == []
