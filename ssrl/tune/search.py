"""Per-group search and early stopping inside one Tuner.

Every trial config carries a group name (``config["group"]``, e.g. ``"ssl_finetune[simclr]@0.1"`` or ``"scratch@N70"``).
``GroupedASHA`` keeps one ASHA per group, so a trial is only ever compared with trials of its
own group; ``GroupedOptunaSearch`` keeps one TPE study per group (multivariate, 3 random start-up trials:
``sampler_for``), seeded from the search seed and the group name, and gives each group exactly its budget of trials (round-robin), merging the group's fixed
values into each config.

    tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
        metric=METRIC, mode="max", num_samples=-1, max_concurrent_trials=4,
        search_alg=GroupedOptunaSearch(space, groups, samples_per_group=8, seed=0),
        scheduler=GroupedASHA(time_attr="epoch", grace_period=3, reduction_factor=3, max_t=30)))
"""

from __future__ import annotations

import hashlib
import math
import pickle
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import optuna
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from ssrl.tune import raycompat

GROUP_KEY = "group"


def _check_mode(mode: str | None) -> None:
    """ValueError unless mode is None, 'min' or 'max'."""
    if mode not in (None, "min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")


def _set_props(obj: Any, metric: str | None, mode: str | None) -> bool:
    """Fill metric/mode where unset; False on a conflict with values already set."""
    _check_mode(mode)
    old_metric, old_mode = raycompat.metric_mode(obj)
    if (metric and old_metric and metric != old_metric) or (mode and old_mode and mode != old_mode):
        return False
    raycompat.set_metric_mode(obj, old_metric or metric, old_mode or mode)
    return True


class _PickledState:
    """save/restore for Tuner.restore: the whole state pickled (a scheduler's rungs of every group, a
    searcher's study of every group)."""

    def save(self, checkpoint_path: str) -> None:
        """Pickle this object's state."""
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        """Load state written by save()."""
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class GroupedASHA(_PickledState, FIFOScheduler):
    """Asynchronous successive halving run separately per ``config[group_key]``."""

    def __init__(
        self,
        metric: str | None = None,
        mode: str | None = None,
        time_attr: str = "training_iteration",
        grace_period: int = 1,
        reduction_factor: float = 3,
        max_t: int = 100,
        group_key: str = GROUP_KEY,
        stop_last_trials: bool = True,
    ) -> None:
        """Same knobs as ``AsyncHyperBandScheduler`` (one bracket) plus the config key of the group."""
        super().__init__()
        _check_mode(mode)
        # Fail here rather than at the first trial: the asserts ASHA makes, as errors.
        if not (max_t > 0 and 0 < grace_period <= max_t and reduction_factor > 1):
            raise ValueError(f"need 0 < grace_period ({grace_period}) <= max_t ({max_t}) "
                             f"and reduction_factor ({reduction_factor}) > 1")
        raycompat.set_metric_mode(self, metric, mode)
        self._kwargs = dict(time_attr=time_attr, grace_period=grace_period, max_t=max_t,
                            reduction_factor=reduction_factor, stop_last_trials=stop_last_trials)
        self._group_key = group_key
        self._asha: dict[str, AsyncHyperBandScheduler] = {}
        self._group_of: dict[str, str] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Take metric/mode from the TuneConfig; False only when they contradict the constructor's."""
        return _set_props(self, metric, mode)

    def _child(self, trial: Any) -> AsyncHyperBandScheduler | None:
        """The ASHA of the trial's group (None for a trial this scheduler never saw)."""
        group = self._group_of.get(trial.trial_id)
        return None if group is None else self._asha[group]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        """Register the trial with its group's ASHA (created on first use)."""
        metric, mode = raycompat.metric_mode(self)
        if not metric or not mode:
            raise ValueError("GroupedASHA needs metric and mode (here or in tune.TuneConfig)")
        if self._group_key not in trial.config:
            raise ValueError(f"trial {trial.trial_id} has no config[{self._group_key!r}]; "
                             f"GroupedASHA needs every trial to name its group")
        group = str(trial.config[self._group_key])
        if group not in self._asha:
            self._asha[group] = AsyncHyperBandScheduler(metric=metric, mode=mode, **self._kwargs)
        self._group_of[trial.trial_id] = group
        self._asha[group].on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        """CONTINUE or STOP, judged against the trial's own group only."""
        child = self._child(trial)
        if child is None:
            return TrialScheduler.CONTINUE
        return child.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        """Record the final result in the group's rungs and forget the trial."""
        child = self._child(trial)
        if child is not None and raycompat.asha_has(child, trial.trial_id):
            child.on_trial_complete(tune_controller, trial, result)
        self._group_of.pop(trial.trial_id, None)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        """Forget an errored trial (Tune may re-add it on retry)."""
        self.on_trial_remove(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        """Forget a trial removed while pending or paused."""
        child = self._child(trial)
        if child is not None:
            raycompat.asha_forget(child, trial.trial_id)
        self._group_of.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        """One ASHA summary line block per group."""
        lines = [f"Using GroupedASHA over {len(self._asha)} groups:"]
        lines += [f"[{g}] {a.debug_string()}" for g, a in sorted(self._asha.items())]
        return "\n".join(lines)


# The sampler, chosen by bench/sampler_choice.py (docs/RESULTS.md section 11): Optuna's default TPE samples at
# random until 10 trials finish, so with the 2-10 samples per group the sweeps give it, every suggestion was
# random. With 3 random start-up trials and a joint (multivariate) model of lr and weight decay, TPE found a
# near-best setting more often at 8 and 10 samples per group (0.59 vs 0.42 for random at 10, margin 0.02) and
# no less often at 3-4; quasi-random Sobol did no better than random. At 3 or fewer samples it is random search.
# Replayed on a measured demo-scale surface (bench/sampler_real.py, same section) it beats random at 4-10 samples;
# Sobol is ahead there only at the tightest margin at 10 samples, and behind it on the bump: compared pairwise
# (McNemar, Holm), TPE is the one candidate better than random on both objectives, so it stays at every budget.
STARTUP_TRIALS = 3


def sampler_for(seed: int) -> optuna.samplers.BaseSampler:
    """A group's sampler: TPE, multivariate, with STARTUP_TRIALS random trials first."""
    import warnings

    with warnings.catch_warnings():  # Optuna marks multivariate TPE experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(n_startup_trials=STARTUP_TRIALS, multivariate=True, seed=seed)


def describe_sampler(samples_per_group: int | Mapping[str, int]) -> dict[str, Any]:
    """What the search is, for results.json and MLflow: sampler, its start-up and the per-group budget."""
    budgets = sorted(set(samples_per_group.values())) if isinstance(samples_per_group, Mapping) else [
        int(samples_per_group)]
    return {"sampler": "optuna TPESampler (multivariate)", "n_startup_trials": STARTUP_TRIALS,
            "samples_per_group": budgets[0] if len(budgets) == 1 else budgets,
            "random_only": max(budgets) <= STARTUP_TRIALS}  # every suggestion random at such budgets


def group_seed(seed: int, group: str) -> int:
    """The sampler seed of one group: derived from the search seed and the group name (stable across runs)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{group}".encode()).digest()[:4], "big")


class GroupedOptunaSearch(_PickledState, Searcher):
    """One Optuna TPE study per group (``sampler_for``), seeded per group; each group gets exactly its budget."""

    def __init__(
        self,
        space: Mapping[str, Any],
        groups: Sequence[Mapping[str, Any]],
        samples_per_group: int | Mapping[str, int],
        metric: str | None = None,
        mode: str | None = None,
        seed: int = 0,
        max_concurrent: int | None = None,
        objective: str = "best",
        group_key: str = GROUP_KEY,
    ) -> None:
        """space: Tune domains (tune.loguniform, ...); groups: fixed values incl. config[group_key].

        Each group's sampler has its own seed, ``group_seed(seed, group)``: with one shared seed every
        group would try the same candidate points, and with a budget of two that is a search of two points
        for the whole sweep. ``objective="best"`` tells Optuna a trial's best reported value (ASHA may stop
        a trial right after a good epoch); "last" the final one.
        """
        _check_mode(mode)
        super().__init__(metric=metric, mode=mode)
        if objective not in ("best", "last"):
            raise ValueError(f"objective must be 'best' or 'last', got {objective!r}")
        names = [str(g.get(group_key, "")) for g in groups]
        if not groups or "" in names or len(set(names)) != len(names):
            raise ValueError(f"groups must be non-empty dicts with distinct non-empty {group_key!r}: {names}")
        clash = set(space) & {k for g in groups for k in g}
        if clash:
            raise ValueError(f"searched keys also fixed by a group: {sorted(clash)}")
        if isinstance(samples_per_group, Mapping):
            missing = set(names) - set(samples_per_group)
            if missing:
                raise ValueError(f"samples_per_group lacks groups {sorted(missing)}")
            budget = {n: int(samples_per_group[n]) for n in names}
        else:
            budget = dict.fromkeys(names, int(samples_per_group))
        if any(b < 0 for b in budget.values()):
            raise ValueError(f"negative budget in {budget}")
        self._distributions = OptunaSearch.convert_search_space(dict(space))
        self._fixed = {n: dict(g) for n, g in zip(names, groups)}
        self._budget, self._used = budget, dict.fromkeys(names, 0)
        self._seed, self._objective, self._group_key = seed, objective, group_key
        self._max_concurrent = max_concurrent
        self._studies: dict[str, OptunaSearch] = {}
        self._group_of: dict[str, str] = {}
        self._best: dict[str, float] = {}
        self._live: set[str] = set()
        self._next = 0  # round-robin position

    @property
    def total_samples(self) -> int:
        """Sum of all group budgets (a valid ``num_samples``; -1 works too)."""
        return sum(self._budget.values())

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        """Take metric/mode from the TuneConfig; param_space must hold fixed values only."""
        keys = raycompat.searched_keys(config)
        if keys:
            raise ValueError(f"param_space has searched values {keys}; "
                             f"put them in GroupedOptunaSearch(space=...) or in the groups")
        if not _set_props(self, metric, mode):
            raise ValueError(f"GroupedOptunaSearch was built for {self.metric!r}/{self.mode!r}, "
                             f"the TuneConfig asks for {metric!r}/{mode!r}")
        return True

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Handle ConcurrencyLimiter's limit here (True: the limiter then just delegates)."""
        self._max_concurrent = max_concurrent
        return True

    def _study(self, group: str) -> OptunaSearch:
        """The group's OptunaSearch, created on first use."""
        if group not in self._studies:
            sampler = sampler_for(group_seed(self._seed, group))
            self._studies[group] = OptunaSearch(space=self._distributions, metric=self.metric,
                                                mode=self.mode, sampler=sampler, study_name=group)
        return self._studies[group]

    def suggest(self, trial_id: str) -> dict | str | None:
        """Next config (group fixed values + sampled values), None at the concurrency limit, or FINISHED."""
        if not self.metric or not self.mode:
            raise RuntimeError("GroupedOptunaSearch needs metric and mode (here or in tune.TuneConfig)")
        names = list(self._budget)
        open_ = [n for n in names if self._used[n] < self._budget[n]]
        if not open_:
            return Searcher.FINISHED
        if self._max_concurrent and len(self._live) >= self._max_concurrent:
            return None
        while self._used[names[self._next % len(names)]] >= self._budget[names[self._next % len(names)]]:
            self._next += 1
        group = names[self._next % len(names)]
        self._next += 1
        params = self._study(group).suggest(trial_id)
        self._used[group] += 1
        self._group_of[trial_id] = group
        self._live.add(trial_id)
        return {**self._fixed[group], **params}

    def _track(self, trial_id: str, result: Mapping[str, Any] | None) -> None:
        """Keep the trial's best-so-far metric value."""
        value = (result or {}).get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            old = self._best.get(trial_id)
            better = old is None or (value > old if self.mode == "max" else value < old)
            self._best[trial_id] = value if better else old

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Route an intermediate result to the owning group's study."""
        group, value = self._group_of.get(trial_id), result.get(self.metric)
        if group is None or not isinstance(value, (int, float)) or not math.isfinite(value):
            return  # Optuna cannot take NaN or a missing value as an intermediate report
        self._track(trial_id, result)
        if "training_iteration" in result:
            self._studies[group].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Tell the owning group's study the trial's value (best-so-far or last)."""
        group = self._group_of.pop(trial_id, None)
        self._live.discard(trial_id)
        if group is None:
            return
        self._track(trial_id, result)
        best = self._best.pop(trial_id, None)
        if self._objective == "best" and best is not None and not error:
            result = {**(result or {}), self.metric: best}
        self._studies[group].on_trial_complete(trial_id, result=result, error=error)


def _best_value(result: Any, metric: str, mode: str) -> float | None:
    """Best finite value of metric over everything a Result reported (None if never reported)."""
    values: list[float] = []
    df = getattr(result, "metrics_dataframe", None)
    if df is not None and metric in df:
        values = [float(v) for v in df[metric].dropna()]
    last = (getattr(result, "metrics", None) or {}).get(metric)
    if isinstance(last, (int, float)):
        values.append(float(last))
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def best_per_group(results: Iterable[Any], metric: str, mode: str = "max",
                   group_key: str = GROUP_KEY) -> dict[str, dict[str, Any]]:
    """Per group, the trial with the best best-so-far metric: {"config", "score", "path", "n_trials"}.

    ``n_trials`` counts the group's trials that reported the metric (the ones the choice was made among).
    """
    _check_mode(mode)
    best: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for result in results:
        config = getattr(result, "config", None) or {}
        if getattr(result, "error", None) is not None or group_key not in config:
            continue
        score = _best_value(result, metric, mode)
        if score is None:
            continue
        group = str(config[group_key])
        counts[group] = counts.get(group, 0) + 1
        old = best.get(group)
        if old is None or (score > old["score"] if mode == "max" else score < old["score"]):
            best[group] = {"config": dict(config), "score": score, "path": getattr(result, "path", None)}
    return {g: {**b, "n_trials": counts[g]} for g, b in best.items()}
