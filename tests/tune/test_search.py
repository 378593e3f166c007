"""Per-group ASHA and Optuna search: decisions checked directly, then inside a real Tuner."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from ssrl.tune.search import (
    GroupedASHA,
    GroupedOptunaSearch,
    best_per_group,
    group_seed,
)

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
SPACE = {"lr": tune.loguniform(1e-4, 1e-1), "weight_decay": tune.loguniform(1e-6, 1e-2)}


def _trial(tid: str, group: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=tid, config={"group": group})


# ---- the scheduler's decisions, no Ray running ----------------------------------------------

def test_grouped_asha_never_lets_one_group_stop_another():
    kw = dict(metric="score", mode="max", grace_period=1, reduction_factor=2, max_t=4)
    grouped, single = GroupedASHA(time_attr="epoch", **kw), AsyncHyperBandScheduler(time_attr="epoch", **kw)
    scores = {"a1": 0.9, "a2": 0.8, "b1": 0.2, "b2": 0.1}  # group A uniformly above group B
    trials = [_trial(t, t[0].upper()) for t in scores]
    for sched in (grouped, single):
        for t in trials:
            sched.on_trial_add(None, t)

    def at(t, epoch):
        return {"epoch": epoch, "score": scores[t.trial_id]}

    got = {t.trial_id: grouped.on_trial_result(None, t, at(t, 1)) for t in trials}
    one = {t.trial_id: single.on_trial_result(None, t, at(t, 1)) for t in trials}
    assert one == {"a1": CONTINUE, "a2": STOP, "b1": STOP, "b2": STOP}  # B's best dies at rung 1
    assert got == {"a1": CONTINUE, "a2": STOP, "b1": CONTINUE, "b2": STOP}  # judged within B only
    b1 = trials[2]
    assert grouped.on_trial_result(None, b1, at(b1, 2)) == CONTINUE
    assert grouped.on_trial_result(None, b1, at(b1, 4)) == STOP  # reached max_t
    grouped.on_trial_complete(None, b1, at(b1, 4))
    grouped.on_trial_remove(None, trials[3])
    grouped.on_trial_complete(None, _trial("never-added", "B"), {})  # tolerated
    assert "[A]" in grouped.debug_string() and "[B]" in grouped.debug_string()


def test_grouped_asha_min_mode_and_errors():
    sched = GroupedASHA(grace_period=1, reduction_factor=2, max_t=8)
    assert sched.set_search_properties("loss", "min") is True
    assert sched.set_search_properties("loss", "min") is True  # same values again: fine
    assert sched.set_search_properties("acc", None) is False  # contradiction
    t1, t2 = _trial("1", "g"), _trial("2", "g")
    for t in (t1, t2):
        sched.on_trial_add(None, t)
    assert sched.on_trial_result(None, t1, {"training_iteration": 1, "loss": 0.5}) == CONTINUE
    assert sched.on_trial_result(None, t2, {"training_iteration": 1, "loss": 0.9}) == STOP
    with pytest.raises(ValueError, match="group"):
        sched.on_trial_add(None, SimpleNamespace(trial_id="x", config={}))
    with pytest.raises(ValueError, match="grace_period"):
        GroupedASHA(grace_period=5, max_t=2)


# ---- the searcher's decisions, no Ray running -----------------------------------------------

GROUPS = [{"group": "A", "aug": "none"}, {"group": "B", "aug": "strong"}, {"group": "C", "aug": "none"}]


def test_grouped_optuna_budgets_round_robin_and_merge():
    s = GroupedOptunaSearch(SPACE, GROUPS, {"A": 2, "B": 1, "C": 3}, metric="score", mode="max", seed=3)
    assert s.total_samples == 6
    configs = [s.suggest(f"t{i}") for i in range(6)]
    assert [c["group"] for c in configs] == ["A", "B", "C", "A", "C", "C"]
    assert s.suggest("t6") == GroupedOptunaSearch.FINISHED
    for c in configs:
        assert c["aug"] == {"A": "none", "B": "strong", "C": "none"}[c["group"]]
        assert 1e-4 <= c["lr"] <= 1e-1 and 1e-6 <= c["weight_decay"] <= 1e-2
    again = GroupedOptunaSearch(SPACE, GROUPS, {"A": 2, "B": 1, "C": 3}, metric="score", mode="max", seed=3)
    assert [again.suggest(f"t{i}") for i in range(6)] == configs  # seeded


def test_each_group_draws_its_own_points():
    """Groups' samplers have seeds of their own (from the search seed and the group): with one shared seed the
    whole sweep tried the same two points in every group."""
    s = GroupedOptunaSearch(SPACE, GROUPS, 2, metric="score", mode="max", seed=0)
    points = {}
    for i in range(6):
        c = s.suggest(f"t{i}")
        points.setdefault(c["group"], []).append((c["lr"], c["weight_decay"]))
    assert len({tuple(p) for p in points.values()}) == 3, points
    assert group_seed(0, "A") != group_seed(0, "B") and group_seed(0, "A") != group_seed(1, "A")
    assert group_seed(0, "A") == group_seed(0, "A")  # stable across processes: a hash, not hash()


def test_grouped_optuna_concurrency_and_best_so_far_objective():
    s = GroupedOptunaSearch(SPACE, GROUPS[:1], 3, seed=0)
    s.set_search_properties("score", "max", {"data_root": "/x"})
    assert s.set_max_concurrency(1) is True
    assert s.suggest("t0") is not None and s.suggest("t1") is None  # at the limit
    s.on_trial_result("t0", {"training_iteration": 1, "score": 0.9})
    s.on_trial_result("t0", {"training_iteration": 2, "score": 0.1})
    s.on_trial_complete("t0", {"training_iteration": 2, "score": 0.1})
    assert s._studies["A"]._ot_study.trials[0].value == pytest.approx(0.9)  # best, not last
    assert s.suggest("t1")["group"] == "A"


def test_state_survives_save_and_restore(tmp_path):
    s = GroupedOptunaSearch(SPACE, GROUPS[:2], 2, metric="score", mode="max", seed=1)
    first = [s.suggest(f"t{i}") for i in range(2)]
    s.on_trial_complete("t0", {"training_iteration": 1, "score": 0.5})
    s.save(str(tmp_path / "searcher.pkl"))
    back = GroupedOptunaSearch(SPACE, GROUPS[:2], 2, metric="score", mode="max", seed=1)
    back.restore(str(tmp_path / "searcher.pkl"))
    rest = [back.suggest(f"t{i}") for i in range(2, 5)]
    assert [c["group"] for c in first + rest[:2]] == ["A", "B", "A", "B"]
    assert rest[2] == GroupedOptunaSearch.FINISHED  # the budget used before the save still counts

    sched = GroupedASHA(metric="score", mode="max", grace_period=1, reduction_factor=2, max_t=4)
    t1, t2 = _trial("1", "g"), _trial("2", "g")
    for t in (t1, t2):
        sched.on_trial_add(None, t)
    sched.on_trial_result(None, t1, {"training_iteration": 1, "score": 0.9})
    sched.save(str(tmp_path / "sched.pkl"))
    again = GroupedASHA()
    again.restore(str(tmp_path / "sched.pkl"))
    assert again.on_trial_result(None, t2, {"training_iteration": 1, "score": 0.1}) == STOP


def test_grouped_optuna_rejects_bad_setup():
    with pytest.raises(ValueError, match="searched values"):
        GroupedOptunaSearch(SPACE, GROUPS, 1).set_search_properties("s", "max", {"lr": tune.uniform(0, 1)})
    with pytest.raises(ValueError, match="fixed by a group"):
        GroupedOptunaSearch(SPACE, [{"group": "A", "lr": 0.1}], 1)
    with pytest.raises(ValueError, match="distinct"):
        GroupedOptunaSearch(SPACE, [{"group": "A"}, {"group": "A"}], 1)
    with pytest.raises(RuntimeError, match="metric and mode"):
        GroupedOptunaSearch(SPACE, GROUPS, 1).suggest("t0")


def test_best_per_group_uses_best_so_far():
    def res(group, tag, scores, error=None):
        return SimpleNamespace(config={"group": group, "tag": tag}, error=error, path=tag,
                               metrics={"score": scores[-1]}, metrics_dataframe=pd.DataFrame({"score": scores}))

    results = [res("A", "peaked", [0.5, 0.9, 0.3]), res("A", "steady", [0.6, 0.7]),
               res("B", "nan", [math.nan, 0.2]), res("B", "ok", [0.1, 0.15]),
               res("B", "crashed", [0.99], error=RuntimeError("boom"))]
    assert {g: b["config"]["tag"] for g, b in best_per_group(results, "score", "max").items()} == {
        "A": "peaked", "B": "nan"}
    assert best_per_group(results, "score", "min")["A"]["score"] == pytest.approx(0.3)
    assert {g: b["n_trials"] for g, b in best_per_group(results, "score").items()} == {"A": 2, "B": 2}


# ---- inside a real Tuner on local Ray ------------------------------------------------------

BASE = {"A": 10.0, "B": 0.0}


def _quality_trainable(config):
    for epoch in range(1, 5):
        tune.report({"epoch": epoch, "score": BASE[config["group"]] + config["q"] + 0.01 * epoch})


def test_grouped_asha_in_tuner(ray_session):
    tuner = tune.Tuner(
        _quality_trainable,
        param_space={"group": tune.grid_search(["A", "B"]), "q": tune.grid_search([3, 1])},
        tune_config=tune.TuneConfig(
            metric="score", mode="max", max_concurrent_trials=1, reuse_actors=True,  # sequential: rung order known
            scheduler=GroupedASHA(time_attr="epoch", grace_period=1, reduction_factor=2, max_t=4)),
        run_config=tune.RunConfig(name="asha", storage_path=ray_session.storage, verbose=0),
    )
    grid = tuner.fit()
    assert grid.num_errors == 0
    epochs = {(r.config["group"], r.config["q"]): r.metrics["epoch"] for r in grid}
    # Each group's first (best) trial runs to max_t; the worse one stops at the first rung,
    # judged against their own group: one global ASHA would stop all of B at epoch 1.
    assert epochs == {("A", 3): 4, ("A", 1): 1, ("B", 3): 4, ("B", 1): 1}


def _lr_trainable(config):
    peak = -((math.log10(config["lr"]) + 2.5) ** 2)
    for epoch in range(1, 4):
        tune.report({"epoch": epoch, "score": config["base"] + peak - 0.1 * (epoch - 2) ** 2})


def test_grouped_optuna_in_tuner(ray_session):
    groups = [{"group": "A", "base": 10.0, "aug": "none"}, {"group": "B", "base": 0.0, "aug": "strong"}]
    search = GroupedOptunaSearch(SPACE, groups, {"A": 3, "B": 2}, seed=0)
    tuner = tune.Tuner(
        _lr_trainable,
        param_space={"sweep": "test"},
        tune_config=tune.TuneConfig(
            metric="score", mode="max", num_samples=-1, max_concurrent_trials=2, search_alg=search, reuse_actors=True,
            scheduler=GroupedASHA(time_attr="epoch", grace_period=1, reduction_factor=2, max_t=3)),
        run_config=tune.RunConfig(name="optuna", storage_path=ray_session.storage, verbose=0),
    )
    grid = tuner.fit()
    assert grid.num_errors == 0 and len(grid) == 5
    by_group: dict[str, list] = {}
    for r in grid:
        by_group.setdefault(r.config["group"], []).append(r)
        fixed = groups[0] if r.config["group"] == "A" else groups[1]
        assert {k: r.config[k] for k in fixed} == fixed and r.config["sweep"] == "test"
        assert 1e-4 <= r.config["lr"] <= 1e-1 and 1e-6 <= r.config["weight_decay"] <= 1e-2
    assert {g: len(v) for g, v in by_group.items()} == {"A": 3, "B": 2}
    best = {g: b["config"] for g, b in best_per_group(grid, "score", "max").items()}
    for g, results in by_group.items():
        top = max(results, key=lambda r: r.metrics_dataframe["score"].max())
        assert best[g]["lr"] == top.config["lr"] and best[g]["group"] == g


def test_each_group_models_after_three_random_trials():
    """TPE with 3 random start-up trials and a joint model of lr and weight decay (bench/sampler_choice.py):
    Optuna's default start-up of 10 meant that no sweep we ship ever left random search."""
    from ssrl.tune.search import STARTUP_TRIALS, describe_sampler

    s = GroupedOptunaSearch(SPACE, GROUPS[:1], 8, metric="score", mode="max", seed=0)
    s.suggest("t0")
    sampler = s._studies["A"]._ot_study.sampler
    assert STARTUP_TRIALS == 3 and sampler._n_startup_trials == 3 and sampler._multivariate
    assert describe_sampler(8) == {"sampler": "optuna TPESampler (multivariate)", "n_startup_trials": 3,
                                   "samples_per_group": 8, "random_only": False}
    assert describe_sampler({"A": 2, "B": 3})["random_only"] and describe_sampler({"A": 2, "B": 3})[
        "samples_per_group"] == [2, 3]


def test_a_resumed_search_suggests_what_an_uninterrupted_one_would(tmp_path):
    """Past the start-up trials the suggestions come from the model; saved and restored mid-way, the search
    goes on exactly as if it had never stopped (the studies and their samplers' random state are kept)."""
    def run(stop_after: int | None) -> list[dict]:
        s = GroupedOptunaSearch(SPACE, GROUPS[:1], 7, metric="score", mode="max", seed=5)
        out = []
        for i in range(7):
            if i == stop_after:
                s.save(str(tmp_path / "s.pkl"))
                s = GroupedOptunaSearch(SPACE, GROUPS[:1], 7, metric="score", mode="max", seed=5)
                s.restore(str(tmp_path / "s.pkl"))
            c = s.suggest(f"t{i}")
            out.append(c)
            s.on_trial_complete(f"t{i}", {"training_iteration": 1, "score": -abs(math.log10(c["lr"]) + 2.5)})
        return out

    whole, resumed = run(None), run(4)
    assert resumed == whole and len({c["lr"] for c in whole}) == 7
