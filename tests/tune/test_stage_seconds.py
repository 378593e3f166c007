"""A sweep records how long each of its stages ran (pretrain, search, eval) in state.json as it goes and in
results.json at the end; an interrupted stage keeps the time it ran, and --resume adds the rest."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ssrl.tune import runner, stages
from ssrl.tune.dataset import DatasetInfo
from ssrl.tune.spec import load_sweep

PRETRAIN_S, SEARCH_S, EVAL_S = 5.0, 7.0, 11.0


@pytest.fixture
def fake_stages(monkeypatch):
    """Stages that take no time but move a fake clock by a known amount each; `cut` makes eval raise Ctrl-C."""
    now, cut = [100.0], []

    def spend(seconds: float) -> None:
        now[0] += seconds

    def ensure_pretrained(ctx, spec, methods):
        spend(PRETRAIN_S)
        return [{"method": m, "seed": 42, "uri": f"file:///pretrained/{m}"} for m in methods]

    def search(ctx, spec, pretrained):
        spend(SEARCH_S)
        return {c.group: {"lr": 1e-3, "weight_decay": 1e-4, "val_score": 0.5, "n_trials": 8}
                for c in spec.searched_cells}

    def evaluate(ctx, spec, pretrained, chosen, encoders=None):
        if cut:
            spend(3.0)
            raise KeyboardInterrupt("eval: 4 trials unfinished")
        spend(EVAL_S)
        return []

    monkeypatch.setattr(runner, "_clock", lambda: now[0])
    for name, fn in (("ensure_pretrained", ensure_pretrained), ("search", search), ("evaluate", evaluate)):
        monkeypatch.setattr(stages, name, fn)
    return cut


def _run(tmp_path, state):
    ctx = stages.Context(storage=str(tmp_path / "ray"), run_id=state["run_id"], cpus=1, gpus=0,
                         dataset=DatasetInfo("synthetic", "/d", "f" * 64, 100), max_concurrent=None, resume=False,
                         say=lambda line: None)
    spec = load_sweep("scarcity", "smoke")
    spec = dataclasses.replace(spec, search=dataclasses.replace(spec.search, enabled=True))
    return runner._stages(ctx, spec, load_sweep("pretrain", "smoke"), state, tmp_path)


def test_each_stage_records_its_seconds_in_state_and_results(fake_stages, tmp_path):
    res = _run(tmp_path, {"run_id": "r", "stages": {}})
    want = {"pretrain": PRETRAIN_S, "search": SEARCH_S, "eval": EVAL_S}
    assert res["stage_seconds"] == want
    assert json.loads((tmp_path / runner.STATE).read_text())["stage_seconds"] == want


def test_an_interrupted_stage_keeps_its_time_and_resume_adds_the_rest(fake_stages, tmp_path):
    fake_stages.append(True)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, {"run_id": "r", "stages": {}})
    state = json.loads((tmp_path / runner.STATE).read_text())
    assert state["stage_seconds"] == {"pretrain": PRETRAIN_S, "search": SEARCH_S, "eval": 3.0}
    assert set(state["stages"]["search"]) == {c.group for c in load_sweep("scarcity", "smoke").searched_cells}

    fake_stages.clear()  # --resume: the search is not run again; pretraining (reused) and eval add theirs
    res = _run(tmp_path, state)
    assert res["stage_seconds"] == {"pretrain": 2 * PRETRAIN_S, "search": SEARCH_S, "eval": 3.0 + EVAL_S}


def test_results_without_timed_stages_have_no_stage_seconds(tmp_path):
    """A state without stage_seconds (an older run's) gives results.json the shape it had before."""
    spec = load_sweep("scarcity", "smoke")
    res = runner._results(spec, DatasetInfo("synthetic", "/d", "f" * 64, 100), [], spec.metric,
                          {"run_id": "r", "stages": {}})
    assert "stage_seconds" not in res and res["n_runs"] == 0
