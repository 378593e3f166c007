"""Every use of Ray Tune internals, in one place, each with the assumption it rests on.

Ray gives no public way to do these; each is a line or two against its internals. When a Ray
upgrade breaks one, tests/tune/test_raycompat.py fails naming the assumption, and this is the
only file to change. pyproject.toml bounds Ray to the versions those tests passed on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray.tune.search.variant_generator import parse_spec_vars  # a DeveloperAPI


def grid_trials(grid: Any) -> list[Any]:
    """The Trial objects behind a ResultGrid (their status and last result, which a Result lacks).

    Relies on: ``ResultGrid._experiment_analysis.trials`` lists every trial of the experiment,
    including those an interrupt left PENDING (which the grid's Results leave out of their status).
    """
    return list(grid._experiment_analysis.trials)


def asha_has(asha: Any, trial_id: str) -> bool:
    """Whether an AsyncHyperBandScheduler has the trial in a bracket (its on_trial_complete needs it).

    Relies on: ``AsyncHyperBandScheduler._trial_info`` maps trial_id -> bracket for the added trials.
    """
    return trial_id in asha._trial_info


def asha_forget(asha: Any, trial_id: str) -> None:
    """Drop a trial from an AsyncHyperBandScheduler without a result (it has no on_trial_remove that does).

    Relies on: the same ``_trial_info`` map; removing the entry is all that forgets the trial.
    """
    asha._trial_info.pop(trial_id, None)


def metric_mode(obj: Any) -> tuple[str | None, str | None]:
    """The metric and mode a Searcher or TrialScheduler (or a subclass of ours) holds."""
    return obj._metric, getattr(obj, "_mode", None)


def set_metric_mode(obj: Any, metric: str | None, mode: str | None) -> None:
    """Set the metric and mode of a Searcher or TrialScheduler subclass, as Ray's own subclasses do.

    Relies on: ``Searcher.metric``/``.mode`` and ``TrialScheduler.metric`` return ``_metric``/``_mode``
    (Tune reads ``searcher.metric``/``.mode``, e.g. in ConcurrencyLimiter and SearchGenerator).
    """
    obj._metric, obj._mode = metric, mode


def searched_keys(config: dict[str, Any]) -> list[str]:
    """Keys ("a/b" when nested) of a param_space whose values Tune samples or grid-searches."""
    _, domains, grids = parse_spec_vars(config or {})
    return ["/".join(map(str, k)) for k, _ in domains + grids]


def add_mixins(trainable: Callable, *mixins: type) -> Callable:
    """The function trainable, with mixins put into the Trainable class Tune wraps it in.

    Relies on: ``ray.tune.trainable.function_trainable.wrap_function`` puts a function's ``__mixins__``
    before FunctionTrainable in the class it builds, and ``tune.with_resources`` keeps the attribute.
    """
    trainable.__mixins__ = mixins
    return trainable


def restored_checkpoint(arg: Any) -> Any:
    """The tune.Checkpoint inside what Tune hands Trainable.restore (None when it hands something else).

    Relies on: Tune restores a trial with a ``_TrainingResult``, which has ``.checkpoint`` and ``.metrics``.
    """
    return getattr(arg, "checkpoint", None)


def with_checkpoint(arg: Any, checkpoint: Any) -> Any:
    """What Tune hands Trainable.restore, with another checkpoint and the same metrics.

    Relies on: ``_TrainingResult(checkpoint=..., metrics=...)`` builds one that Trainable.restore takes.
    """
    return type(arg)(checkpoint=checkpoint, metrics=arg.metrics)
