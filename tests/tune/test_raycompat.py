"""Each shim of ssrl.tune.raycompat run against the installed Ray: a broken assumption fails naming it.

When one fails after a Ray upgrade, fix the shim in ssrl/tune/raycompat.py and move the Ray bound in
pyproject.toml to the versions this file passes on.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
from ray import tune


@contextlib.contextmanager
def assumption(what: str):
    """Turn any failure inside into one clear line: the Ray version and the assumption that broke."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - whatever Ray now raises, the message must name the assumption
        pytest.fail(f"Ray {ray.__version__}: ssrl.tune.raycompat assumes {what}; that no longer holds "
                    f"({type(e).__name__}: {e}). Update ssrl/tune/raycompat.py and the Ray bound in pyproject.toml.")


@pytest.fixture(scope="module")
def rc():
    """The shim module (its import is an assumption too: parse_spec_vars where it was)."""
    with assumption("ray.tune.search.variant_generator.parse_spec_vars exists"):
        from ssrl.tune import raycompat
    return raycompat


def _two_trials(config: dict) -> None:
    tune.report({"score": config["x"] * 2})


def test_grid_trials_are_the_experiment_trials_with_status_and_last_result(rc, ray_session):
    grid = tune.Tuner(_two_trials, param_space={"x": tune.grid_search([1, 2])},
                      run_config=tune.RunConfig(name="raycompat", storage_path=ray_session.storage, verbose=0)).fit()
    with assumption("ResultGrid._experiment_analysis.trials lists its Trials, each with .status and .last_result"):
        trials = rc.grid_trials(grid)
        assert len(trials) == len(grid) == 2, f"{len(trials)} trials for a grid of {len(grid)}"
        assert sorted((t.status, t.last_result["score"]) for t in trials) == [("TERMINATED", 2), ("TERMINATED", 4)]


def test_asha_trial_map_is_what_asha_reads(rc):
    from ray.tune.schedulers import AsyncHyperBandScheduler

    asha = AsyncHyperBandScheduler(metric="score", mode="max", time_attr="epoch", grace_period=1, max_t=4)
    kept, dropped = SimpleNamespace(trial_id="kept", config={}), SimpleNamespace(trial_id="dropped", config={})
    with assumption("AsyncHyperBandScheduler._trial_info maps the trial_id of every added trial to its bracket, "
                    "and dropping the entry is all that forgets a trial"):
        assert not rc.asha_has(asha, "kept")
        for t in (kept, dropped):
            asha.on_trial_add(None, t)
        assert rc.asha_has(asha, "kept") and rc.asha_has(asha, "dropped")
        rc.asha_forget(asha, "dropped")
        rc.asha_forget(asha, "never-added")  # tolerated
        assert rc.asha_has(asha, "kept") and not rc.asha_has(asha, "dropped")
        asha.on_trial_result(None, kept, {"epoch": 1, "score": 0.5})
        asha.on_trial_complete(None, kept, {"epoch": 1, "score": 0.5})
        assert not rc.asha_has(asha, "kept")  # ASHA forgets a completed trial through the same map
        with pytest.raises(KeyError):  # a forgotten trial is unknown to ASHA (why GroupedASHA asks first)
            asha.on_trial_complete(None, dropped, {"epoch": 1, "score": 0.5})


def test_metric_and_mode_are_what_tune_reads(rc):
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter, Searcher
    from ray.tune.search.search_generator import SearchGenerator

    with assumption("Searcher.metric/.mode and TrialScheduler.metric return _metric/_mode, which Searcher's "
                    "constructor sets and ConcurrencyLimiter and SearchGenerator read"):
        assert rc.metric_mode(Searcher(metric="a", mode="min")) == ("a", "min")
        searcher, scheduler = Searcher(), FIFOScheduler()
        assert rc.metric_mode(searcher) == (None, None) and rc.metric_mode(scheduler)[0] is None
        rc.set_metric_mode(searcher, "score", "max")
        rc.set_metric_mode(scheduler, "score", "max")
        assert (searcher.metric, searcher.mode) == ("score", "max") == rc.metric_mode(searcher)
        assert scheduler.metric == "score" and rc.metric_mode(scheduler) == ("score", "max")
        limited = ConcurrencyLimiter(searcher, max_concurrent=1)
        assert (limited.metric, limited.mode) == ("score", "max")
        assert SearchGenerator(searcher).metric == "score"


def test_searched_keys_finds_domains_and_grids_nested_or_not(rc):
    space = {"lr": tune.loguniform(1e-4, 1e-1), "opt": {"wd": tune.grid_search([0.0, 0.1]), "fixed": 3},
             "group": "a", "seed": tune.choice([1, 2])}
    with assumption("parse_spec_vars(config) returns (resolved, domains, grids) with key paths as tuples"):
        assert sorted(rc.searched_keys(space)) == ["lr", "opt/wd", "seed"]
        assert rc.searched_keys({"group": "a", "n": 1}) == [] and rc.searched_keys(None) == []


class _Marker:
    """A mixin that Tune must put into the class it wraps a function trainable in."""


def test_mixins_reach_the_class_tune_wraps_a_function_in(rc):
    from ray.tune.trainable.function_trainable import FunctionTrainable, wrap_function

    def fn(config: dict) -> None:
        pass

    with assumption("wrap_function puts a function's __mixins__ before FunctionTrainable, and "
                    "tune.with_resources keeps the attribute"):
        cls = wrap_function(tune.with_resources(rc.add_mixins(fn, _Marker), {"cpu": 1}))
        mro = cls.__mro__
        assert _Marker in mro and mro.index(_Marker) < mro.index(FunctionTrainable), [c.__name__ for c in mro]


def test_restore_takes_a_training_result_rebuilt_with_another_checkpoint(rc, tmp_path, request):
    from ray.tune import Trainable

    class Counter(Trainable):
        def setup(self, config: dict) -> None:
            self.n = 0

        def step(self) -> dict:
            self.n += 1
            return {"n": self.n}

        def save_checkpoint(self, checkpoint_dir: str) -> None:
            (Path(checkpoint_dir) / "n").write_text(str(self.n))

        def load_checkpoint(self, checkpoint_dir: str) -> None:
            self.n = int((Path(checkpoint_dir) / "n").read_text())

    with assumption("Trainable.save returns, and Trainable.restore takes, a _TrainingResult with .checkpoint and "
                    ".metrics, built by _TrainingResult(checkpoint=..., metrics=...)"):
        first, second = Counter({}), Counter({})  # each makes a log folder under ~/ray_results: removed below
        request.addfinalizer(lambda: [shutil.rmtree(t.logdir, ignore_errors=True) for t in (first, second)])
        first.train()
        saved = first.save(str(tmp_path / "checkpoint_000001"))
        ckpt = rc.restored_checkpoint(saved)
        assert isinstance(ckpt, tune.Checkpoint) and Path(ckpt.path).name == "checkpoint_000001", ckpt
        newer = tmp_path / "checkpoint_000002"
        newer.mkdir()
        (newer / "n").write_text("7")
        moved = rc.with_checkpoint(saved, tune.Checkpoint.from_directory(str(newer)))
        assert type(moved) is type(saved) and moved.metrics == saved.metrics
        second.restore(moved)
        assert second.n == 7 and second.iteration == saved.metrics["training_iteration"]
    assert rc.restored_checkpoint("a/path") is None  # anything else Tune might hand restore: left as it is
