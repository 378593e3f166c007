"""A trial's results row and its cell's summary run keep the cell's key ``n_labelled`` (the few-shot N) apart from
the labelled records the trial reports it trained on (``n_labelled_used``), so a trial that reports fewer than N
still lands in, and is matched by, the cell of its N."""

from __future__ import annotations

from types import SimpleNamespace

from ssrl.report.tables import results_markdown
from ssrl.tune import runner
from ssrl.tune.meta import TrialMeta, trial_space
from ssrl.tune.spec import load_sweep


def _result(spec, group: str, seed: int, used: int, f1: float) -> SimpleNamespace:
    """A finished Tune result of one trial of ``group`` that trained on ``used`` labelled records."""
    cell = spec.cell(group)
    meta = TrialMeta(spec.name, "eval", group=group, track=cell.track, fraction=cell.fraction,
                     n_labelled=cell.n_labelled)
    metrics = {"done": True, "test_macro_f1": f1, "best_epoch": 4, "collapsed": 0, "best_val_score": 0.3,
               "epochs_run": 6, "n_labelled_used": used, "precision": "fp32"}
    return SimpleNamespace(config=trial_space({"seed": seed, "lr": 1e-3, "weight_decay": 1e-4}, meta, group),
                           metrics=metrics, error=None)


def test_a_trial_that_realises_65_of_n_70_stays_in_the_n_70_cell():
    spec = load_sweep("fewshot", "paper")
    rows = [runner._row(_result(spec, "scratch@N70", s, 65, f1), spec) for s, f1 in ((42, 0.2), (52, 0.25), (62, 0.22))]
    assert [(r["n_labelled"], r["n_labelled_used"], r["status"]) for r in rows] == [(70, 65, "ok")] * 3
    results = {"sweep": "fewshot", "metric": "test_macro_f1",
               "cells": spec.kind.cells(rows, "test_macro_f1", spec.pretrain_methods)}
    (cell,) = results["cells"]
    assert (cell["n_labelled"], cell["n_labelled_used"], cell["n"]) == (70, 65, 3)
    summaries = []
    runner._log_summaries(SimpleNamespace(summary=lambda key, name, tags, metrics: summaries.append((key, tags))),
                          results)
    ((key, tags),) = summaries
    assert key == "summary/scratch@N70" and (tags["n_labelled"], tags["n_labelled_used"]) == (70, 65)
    assert "| 65 (N=70) " in results_markdown(results)


def test_a_scarcity_row_has_no_n_only_the_count_it_trained_on():
    spec = load_sweep("scarcity", "paper")
    row = runner._row(_result(spec, "supervised@0.1", 42, 1709, 0.8), spec)
    assert row["fraction"] == 0.1 and row["n_labelled_used"] == 1709 and "n_labelled" not in row
