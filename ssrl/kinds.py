"""Sweep kinds: what makes a benchmark a benchmark, one registry entry each (pretrain, scarcity, fewshot).

A kind owns the keys its sweep file may hold, how the file lists its cells, the field that places a cell
beside its track (a label fraction, or N labelled), how seeds group into results cells and the paired
statistics those carry, its baseline and its plot. The sweep-file parser (ssrl.tune.spec), the runner,
MLflow tracking and ``python -m ssrl.report rescore`` ask the kind and never test a sweep's name, so a
new benchmark is one ``register(SweepKind(...))`` and one sweeps/<name>.yaml (docs/EXTENDING.md).

Light on purpose (no torch, Ray or data import at module level): launch.py lists the kinds for --sweep.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ssrl.config import LABEL_FREE, TRACKS, ConfigError

# Top-level keys every sweep file may hold, and those of every sweep that fine-tunes and evaluates
COMMON_KEYS = frozenset({"name", "seeds", "train", "resources", "scales", "data"})
EVAL_KEYS = COMMON_KEYS | {"task", "metric", "pretrain_methods", "pretrained", "track_train", "search"}


@dataclass(frozen=True)
class SweepKind:
    """One benchmark. ``place`` is the cell field beside its track ("fraction" or "n_labelled"); a kind
    without one (pretrain) trains encoders and has no evaluation cells.

    list_cells(merged sweep file, task) -> the cells' fields ({track, fraction | n_labelled, bn_stats?}),
    checked; an SSL track is later repeated once per pretraining method.
    contrasts(cells, metric) adds the paired statistics against ``baseline_track`` in place.
    """

    name: str
    keys: frozenset[str] = COMMON_KEYS
    place: str = ""
    cell_keys: tuple[str, ...] = ("track",)  # how seeds group into a results cell (after track, method)
    baseline_track: str = ""
    list_cells: Callable[[dict[str, Any], str], list[dict[str, Any]]] | None = None
    contrasts: Callable[[list[dict], str], Any] | None = None
    plot: str = ""  # the ssrl.report function that draws its results.json
    trivial_baseline: bool = False  # results carry the macro-F1 of always predicting the majority class

    @property
    def evaluates(self) -> bool:
        """True for a benchmark of fine-tuned cells; False for the pretraining sweep."""
        return bool(self.place)

    def where(self, obj: Any) -> dict[str, Any]:
        """{place: value} of a Cell or TrialMeta: what a results row holds beside its track."""
        return {self.place: getattr(obj, self.place)} if self.place else {}

    def cells(self, rows: list[dict], metric: str, methods: Sequence[str]) -> list[dict]:
        """Results cells with their statistics from per-seed rows: the contrast to the baseline at the same
        place, between ``methods`` at the same cell, and Holm-adjusted p-values (ssrl.report.stats.add_holm).
        The runner, rescore and the markdown tables all build cells here."""
        from ssrl.report.stats import add_holm, add_method_contrasts, build_cells

        cells = build_cells(rows, metric, self.cell_keys)
        if self.contrasts is not None:
            self.contrasts(cells, metric)
        add_method_contrasts(cells, metric, methods, self.cell_keys[2:])  # the place beside track, method
        add_holm(cells)  # every p-value of the file, adjusted within its family
        return cells


KINDS: dict[str, SweepKind] = {}


def register(kind: SweepKind) -> SweepKind:
    """Add a benchmark (or replace one of the same name); returns it."""
    if not kind.place and kind.name != "pretrain":
        raise ValueError(f"sweep kind {kind.name!r} needs a place ('fraction' or 'n_labelled')")
    KINDS[kind.name] = kind
    return kind


def kind_of(name: str) -> SweepKind:
    """The registered kind of a sweep name; an unknown one is a ValueError listing the kinds."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown sweep {name!r}; use one of {', '.join(KINDS)}") from None


def kind_of_row(row: dict[str, Any]) -> SweepKind:
    """The evaluating kind a per-seed row belongs to: the one whose place it holds."""
    for kind in KINDS.values():
        if kind.evaluates and row.get(kind.place) is not None:
            return kind
    raise ValueError(f"a row holds none of {', '.join(k.place for k in KINDS.values() if k.evaluates)}")


def n_classes(task: str) -> int:
    """How many classes a task has (ssrl.data.ptbxl.TASK_CLASSES)."""
    from ssrl.data.ptbxl import TASK_CLASSES

    if task not in TASK_CLASSES:
        raise ConfigError(f"task {task!r} is unknown; use one of {', '.join(TASK_CLASSES)}")
    return len(TASK_CLASSES[task])


def _fraction_cells(merged: dict[str, Any], task: str) -> list[dict[str, Any]]:
    """scarcity: every track at every fraction."""
    tracks = [str(t) for t in merged.get("tracks") or []]
    fractions = [float(f) for f in merged.get("fractions") or []]
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise ConfigError(f"fraction {f} is out of range; use 0 < fraction <= 1")
    return [{"track": t, "fraction": f} for f in fractions for t in tracks]


def _condition_cells(merged: dict[str, Any], task: str) -> list[dict[str, Any]]:
    """fewshot: each condition {track, n, bn_stats?}; N must split evenly over the classes."""
    out = []
    for c in merged.get("conditions") or []:
        if not isinstance(c, dict):
            raise ConfigError(f"condition {c!r} must be a mapping {{track, n, bn_stats}}")
        unknown = sorted(set(c) - {"track", "n", "bn_stats"})
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)} in conditions; known: bn_stats, n, track")
        n, track, bn = int(c["n"]), str(c["track"]), str(c.get("bn_stats", ""))
        if track in LABEL_FREE:  # a rule sees no label: it sits at N = 0
            if n != 0:
                raise ConfigError(f"condition {track} uses no labels; give it n: 0, not n: {n}")
        elif n <= 0 or n % n_classes(task):
            raise ConfigError(f"condition n={n} must be a positive multiple of {n_classes(task)} (balanced classes)")
        if bn and track in TRACKS and TRACKS[track].frozen:
            raise ConfigError(f"condition {track} n={n} sets bn_stats, but a frozen encoder keeps its own statistics")
        out.append({"track": track, "n_labelled": n, "bn_stats": bn})
    return out


def _vs_supervised(cells: list[dict], metric: str) -> None:
    from ssrl.report.stats import add_paired_vs

    add_paired_vs(cells, metric, "supervised", ("fraction",))
    add_paired_vs(cells, metric, "random_frozen", ("fraction",), tracks=("ssl_frozen",))  # the frozen control


def _fewshot_contrasts(cells: list[dict], metric: str) -> None:
    from ssrl.report.stats import add_fewshot_contrasts

    add_fewshot_contrasts(cells, metric)


register(SweepKind("pretrain", keys=COMMON_KEYS | {"methods"}))
SCARCITY = register(SweepKind(
    "scarcity", keys=EVAL_KEYS | {"tracks", "fractions"}, place="fraction",
    cell_keys=("track", "method", "fraction"), baseline_track="supervised", list_cells=_fraction_cells,
    contrasts=_vs_supervised, plot="plot_scarcity"))
FEWSHOT = register(SweepKind(
    "fewshot", keys=EVAL_KEYS | {"conditions"}, place="n_labelled",
    cell_keys=("track", "method", "n_labelled", "bn_stats"), baseline_track="scratch", list_cells=_condition_cells,
    contrasts=_fewshot_contrasts, plot="plot_fewshot", trivial_baseline=True))
