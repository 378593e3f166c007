"""bench.bn_source re-scores finished few-shot trials under other BatchNorm statistics, weights untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssrl.config import TRACKS


def test_as_run_reproduces_each_trial_and_precise_equals_its_subset(smoke_runs, tmp_path, capsys):
    from bench import bn_source

    res = json.loads((smoke_runs.out / "fewshot" / "results.json").read_text())
    (eval_dir,) = Path(smoke_runs.storage).glob(f"fewshot-{res['run_id']}-eval")
    bn_source.main([str(eval_dir), "--json", str(tmp_path / "bn.json")])
    rows = json.loads((tmp_path / "bn.json").read_text())
    trained = [c for c in res["cells"] if TRACKS[c["track"]].fit == "sgd"]  # the controls train no encoder
    assert len(rows) == sum(len(c["per_seed"]) for c in trained)  # every trial whose encoder trained
    for r in rows:
        assert r["as_run"] == pytest.approx(r["reported"], abs=1e-9)  # the best weights and statistics reloaded
        if r["bn_stats"] == "precise":  # it evaluated with statistics of its labelled subset: recomputing them
            assert r["subset"] == pytest.approx(r["as_run"], abs=1e-9)  # changes nothing
        assert 0.0 <= r["pool"] <= 1.0
    assert {r["bn_stats"] for r in rows} == {"precise", "running"}
    assert "| scratch@N10:running |" in capsys.readouterr().out
