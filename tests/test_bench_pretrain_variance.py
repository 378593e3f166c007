"""bench.pretrain_variance.compare: per-seed encoders against one shared encoder, from two results files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.pretrain_variance.compare import compare

SEEDS = (42, 52, 62)


def _file(per_seed: bool, cells: list[dict]) -> dict:
    return {"metric": "test_macro_f1", "cells": cells,
            "pretraining": {"per_seed": per_seed, "seeds": list(SEEDS) if per_seed else [42]}}


def _cell(track: str, scores: list[float], method: str | None = None, n: int = 70) -> dict:
    return {"track": track, "method": method, "n_labelled": n, "bn_stats": None,
            "per_seed": [{"seed": s, "test_macro_f1": v} for s, v in zip(SEEDS, scores, strict=True)]}


def test_compare_reports_spread_difference_and_contrasts():
    per_seed = _file(True, [_cell("ssl", [0.40, 0.30, 0.50], "masked"), _cell("scratch", [0.30, 0.30, 0.30]),
                            _cell("hrv_logreg", [0.50, 0.50, 0.50])])
    shared = _file(False, [_cell("ssl", [0.40, 0.41, 0.42], "masked")])
    lines = compare(per_seed, shared)
    row = next(line for line in lines if line.startswith("| ssl[masked] N=70"))
    cols = [c.strip() for c in row.strip("|").split("|")]
    assert cols[1] == "0.4000 ± 0.1000" and cols[2] == "0.4100 ± 0.0100"
    assert cols[3] == "10.00"  # the per-seed encoders spread the scores 10x as much
    assert cols[4].startswith("-0.0100 [")  # per-seed minus shared: (0 - 0.11 + 0.08) / 3
    assert cols[5].startswith("+0.1000 [") and cols[6].startswith("+0.1100 [")  # vs scratch
    assert cols[7].startswith("-0.1000 [") and cols[8].startswith("-0.0900 [")  # vs hrv_logreg
    assert lines[-1].endswith("in 1 of 1 cells")  # seed 42 is the same run in both files


def test_compare_flags_an_anchor_seed_that_differs_and_refuses_swapped_files():
    per_seed = _file(True, [_cell("ssl", [0.40, 0.30, 0.50], "masked")])
    shared = _file(False, [_cell("ssl", [0.39, 0.41, 0.42], "masked")])
    assert compare(per_seed, shared)[-1].endswith("in 0 of 1 cells")
    with pytest.raises(SystemExit, match="per_seed is not true"):
        compare(shared, per_seed)


def test_the_published_comparison_is_what_compare_prints_from_the_published_files():
    """docs/RESULTS.md section 13 quotes compare's table for the two published runs; seed 42 reproduced."""
    root = Path(__file__).resolve().parents[1]
    per_seed, shared = (json.loads((root / "docs/results" / f"fewshot-pretrain-variance-cpu{s}.json").read_text())
                        for s in ("", "-shared"))
    lines = compare(per_seed, shared)
    table = [line for line in lines if line.startswith("| ssl[") or line.startswith("| hybrid[")]
    assert len(table) == 4
    doc = (root / "docs/RESULTS.md").read_text()
    assert all(row in doc for row in table), "section 13's comparison table differs from compare's output"
    assert lines[-1].endswith("in 4 of 4 cells")
