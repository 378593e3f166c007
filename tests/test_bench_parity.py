"""bench.parity pairs cells and seeds of two runs and gives B - A with its interval."""

from __future__ import annotations

import pytest

from bench.parity import compare, markdown


def _results(values: dict[tuple[str, float], dict[int, float]], precision: str) -> dict:
    cells = [{"track": t, "fraction": f, "seeds": list(v), "per_seed": [{"test_macro_auroc": x} for x in v.values()]}
             for (t, f), v in values.items()]
    return {"sweep": "scarcity", "metric": "test_macro_auroc", "precision": {"used": [precision]}, "cells": cells}


def test_pairs_by_cell_and_seed():
    a = _results({("supervised", 0.1): {42: 0.80, 52: 0.82, 62: 0.84}, ("ssl_frozen", 0.1): {42: 0.7, 52: 0.7}}, "fp32")
    b = _results({("ssl_frozen", 0.1): {52: 0.71, 42: 0.72},  # other order: pairing is by seed
                  ("supervised", 0.1): {62: 0.85, 42: 0.81, 52: 0.83}}, "bf16")
    res = compare(a, b)
    sup, frozen = res["cells"]
    assert sup["track"] == "supervised" and sup["mean_diff"] == pytest.approx(0.01)
    assert sup["ci95"] == pytest.approx([0.01, 0.01]) and sup["ci_holds_0"] is False
    assert frozen["n_pairs"] == 2 and frozen["mean_diff"] == pytest.approx(0.015)
    assert res["pooled"]["n_pairs"] == 5 and res["pooled"]["mean_diff"] == pytest.approx(0.06 / 5)
    assert "| supervised | 0.1 | 0.8200 | 0.8300 | +0.0100 |" in markdown(res)


def test_refuses_runs_of_different_sweeps():
    a = _results({("supervised", 0.1): {42: 0.8}}, "fp32")
    with pytest.raises(SystemExit, match="compare two runs of one sweep"):
        compare(a, {**a, "sweep": "fewshot"})
