"""Statistics across seeds: summaries, paired differences, and per-cell aggregation.

Everything returned here is JSON-safe: plain Python floats/ints, and ``None`` (rendered
"n/a") wherever a quantity is undefined (a std or interval from fewer than two values, a
p-value of a constant non-zero difference). No NaN ever reaches a results file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import special
from scipy import stats as sps

STATS_KEYS = frozenset({"status", "error"})


def _t_halfwidth(sd: float, n: int, level: float = 0.95) -> float:
    """Half-width of the Student-t interval for a mean of n values with sample sd."""
    if sd == 0.0:
        return 0.0
    return float(sps.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)


def _finite(values: Sequence[float], name: str = "values") -> np.ndarray:
    """Float array of values; ValueError on NaN/inf (a failed run must be excluded upstream)."""
    arr = np.asarray(list(values), dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of numbers")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf: {arr.tolist()}")
    return arr


STATS_VERSION = 3  # 2: cell intervals of [0, 1] metrics on the logit scale, Holm-adjusted families;
                   # 3: a pretrained embedding beside the rhythm features against a random one's (vs_hybrid_random)
LOGIT_EPS = 1e-4  # values at 0 or 1 are moved this far inside before the logit


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample std (ddof=1), a 95 % interval and n; std/ci95 are None when n < 2.

    Values inside [0, 1] (every metric here: AUROC, F1, accuracy) get a Student t interval on the logit
    scale, mapped back, so the interval stays inside [0, 1] however few the seeds (a plain t interval of
    three AUROCs near 0.92 reached 1.11), widened where needed to hold the mean itself (the back-transform
    centres on the logit mean); other values get the plain Student t interval.
    """
    arr = _finite(values)
    n = int(arr.size)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None}
    mean = float(arr.mean())
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci95": None}
    sd = float(arr.std(ddof=1))
    if arr.min() < 0.0 or arr.max() > 1.0:
        h = _t_halfwidth(sd, n)
        return {"n": n, "mean": mean, "std": sd, "ci95": [mean - h, mean + h]}
    z = special.logit(np.clip(arr, LOGIT_EPS, 1.0 - LOGIT_EPS))
    hz = _t_halfwidth(float(z.std(ddof=1)), n) if np.ptp(z) > 0 else 0.0
    lo, hi = (float(v) for v in special.expit([z.mean() - hz, z.mean() + hz]))
    return {"n": n, "mean": mean, "std": sd, "ci95": [min(lo, mean), max(hi, mean)]}


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Mean of a - b over pairs, its t interval and two-sided paired t-test p-value.

    ci95 and p_value are None when n < 2. When every difference is identical (zero
    variance) the interval collapses to the point and the t statistic is undefined: p_value
    is 1.0 if all differences are 0 (nothing differs) and None otherwise.
    """
    xa, xb = _finite(a, "a"), _finite(b, "b")
    if xa.size != xb.size:
        raise ValueError(f"paired samples differ in length: {xa.size} vs {xb.size}")
    d = xa - xb
    n = int(d.size)
    if n == 0:
        return {"n_pairs": 0, "mean_diff": None, "ci95": None, "p_value": None}
    mean = float(d.mean())
    if n < 2:
        return {"n_pairs": n, "mean_diff": mean, "ci95": None, "p_value": None}
    scale = max(float(np.abs(xa).max()), float(np.abs(xb).max()), 1e-300)
    if np.ptp(d) <= 1e-9 * scale:  # constant up to float rounding (0.6-0.5 != 0.7-0.6)
        h, p = 0.0, (1.0 if np.abs(d).max() <= 1e-9 * scale else None)
    else:
        h = _t_halfwidth(float(d.std(ddof=1)), n)
        p = float(sps.ttest_rel(xa, xb).pvalue)
    return {"n_pairs": n, "mean_diff": mean, "ci95": [mean - h, mean + h], "p_value": p}


def _sort_key(value: Any) -> tuple:
    """Orders numbers numerically, then strings, then None."""
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value))
    return (1, str(value))


def _mean_or_none(values: list) -> float | None:
    """Mean of the non-None values, or None when there are none."""
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def n_labelled_used(obj: dict) -> int | list[int] | None:
    """The labelled records a row trained on (a cell's: one number, or [min, max] when its seeds differ).

    ``n_labelled_used``; a file written before that field had its name holds the count as ``n_labelled``,
    which is now a few-shot cell's key N only (cells are matched by it, never by what their seeds report).
    """
    return obj["n_labelled_used"] if "n_labelled_used" in obj else obj.get("n_labelled")


def _is_ok(row: dict, metric: str) -> tuple[bool, str | None]:
    """Whether a row counts in the statistics, and the error to list if it does not."""
    if row.get("status", "ok") != "ok":
        return False, str(row.get("error") or row.get("status"))
    value = row.get(metric)
    try:
        good = value is not None and not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError):
        good = False
    return (True, None) if good else (False, f"{metric} missing or not finite ({value!r})")


def build_cells(
    rows: list[dict], metric: str, group_keys: tuple[str, ...] = ("track", "fraction")
) -> list[dict]:
    """Group per-seed result rows into cells with statistics over their successful seeds.

    A row needs ``seed`` and the group keys; ``status`` ('ok' | 'failed', default 'ok') and
    ``error`` mark failures, which are listed in ``failed`` but left out of the statistics
    (so is an 'ok' row whose metric is missing or NaN). Group keys absent from every row of
    a cell (e.g. ``fraction`` in few-shot) are left out of the cell. String-valued keys keep
    their first-appearance order (tracks as the sweep declared them); numbers sort ascending.
    """
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in group_keys), []).append(row)
    rank: list[dict[str, int]] = [{} for _ in group_keys]
    for key in groups:
        for i, v in enumerate(key):
            if isinstance(v, str):
                rank[i].setdefault(v, len(rank[i]))

    def order(key: tuple) -> tuple:
        return tuple((1, rank[i][v]) if isinstance(v, str) else _sort_key(v) for i, v in enumerate(key))

    return [_cell(dict(zip(group_keys, key)), groups[key], metric, set(group_keys)) for key in sorted(groups, key=order)]


def _cell(keys: dict[str, Any], rows: list[dict], metric: str, group_keys: set[str]) -> dict[str, Any]:
    """One cell: its group keys (None left out), the statistics over its successful seeds and its failures."""
    cell: dict[str, Any] = {k: v for k, v in keys.items() if v is not None}
    ok, failed = [], []
    for row in rows:
        good, err = _is_ok(row, metric)
        if good:
            ok.append(row)
        else:
            failed.append({"seed": row.get("seed"), "error": err})
    seeds = [r.get("seed") for r in ok]
    dup = {s for s in seeds if seeds.count(s) > 1}
    if dup:
        raise ValueError(f"cell {cell}: seeds {sorted(dup)} have more than one successful row")
    ok.sort(key=lambda r: _sort_key(r.get("seed")))
    used = sorted({n for n in map(n_labelled_used, ok) if n is not None})
    drop = group_keys | STATS_KEYS
    stats = summarize([float(r[metric]) for r in ok])
    collapsed = [bool(r["collapsed"]) for r in ok if r.get("collapsed") is not None]
    single = [bool(r["test_single_class"]) for r in ok if r.get("test_single_class") is not None]
    cell.update(
        n_labelled_used=(used[0] if len(used) == 1 else [used[0], used[-1]]) if used else None,
        seeds=[r.get("seed") for r in ok],
        per_seed=[{k: v for k, v in r.items() if k not in drop} for r in ok],
        mean=stats["mean"],
        std=stats["std"],
        ci95=stats["ci95"],
        n=stats["n"],
        collapse_rate=float(np.mean(collapsed)) if collapsed else None,  # None: no verdict (frozen tracks)
        single_class_rate=float(np.mean(single)) if single else None,  # best model predicts one test class
        best_epoch_mean=_mean_or_none([r.get("best_epoch") for r in ok]),
        n_failed=len(failed),
        failed=sorted(failed, key=lambda f: _sort_key(f["seed"])),
    )
    return cell


def add_paired_vs(
    cells: list[dict],
    metric: str,
    baseline_track: str = "supervised",
    match_keys: tuple[str, ...] = ("fraction",),
    tracks: tuple[str, ...] | None = None,
) -> list[dict]:
    """Add ``vs_<baseline_track>`` (paired by seed) to every cell that is not the baseline.

    A cell is compared with the baseline cell that agrees on ``match_keys`` (a key absent
    from both counts as equal); only seeds present in both cells are paired. Cells without
    a matching baseline get no entry; with ``tracks``, only cells of those tracks are compared. Mutates and
    returns ``cells``.
    """
    base = [c for c in cells if c.get("track") == baseline_track]
    name = f"vs_{baseline_track}"
    for cell in cells:
        if cell.get("track") == baseline_track or (tracks is not None and cell.get("track") not in tracks):
            continue
        matches = [b for b in base if all(b.get(k) == cell.get(k) for k in match_keys)]
        if not matches:
            continue
        if len(matches) > 1:
            raise ValueError(f"{len(matches)} {baseline_track} cells match {cell.get('track')}; "
                             f"add the distinguishing key to match_keys")
        cell[name] = paired_cells(cell, matches[0], metric)
    return cells


def collapse_counts(cell: dict) -> tuple[int, int] | None:
    """(collapsed, seeds) over a cell's successful seeds; None when the collapse rule does not apply."""
    flags = [bool(r["collapsed"]) for r in cell.get("per_seed", []) if r.get("collapsed") is not None]
    return (sum(flags), len(flags)) if flags else None


def fisher_collapse_p(a: dict, b: dict) -> float | None:
    """Two-sided Fisher exact test of two cells' collapse rates (collapsed vs not, per seed); None if undefined."""
    ca, cb = collapse_counts(a), collapse_counts(b)
    if ca is None or cb is None:
        return None
    table = [[ca[0], ca[1] - ca[0]], [cb[0], cb[1] - cb[0]]]
    return float(sps.fisher_exact(table).pvalue)


def add_fewshot_contrasts(cells: list[dict], metric: str) -> list[dict]:
    """Few-shot cells against scratch (and the reference protocol against precise BatchNorm statistics).

    Every cell other than ``scratch`` gets ``vs_scratch`` (paired by seed against the scratch cell of the
    same N and ``bn_stats``; a cell without ``bn_stats``, whose encoder does not train or which has none,
    against scratch with precise statistics) and ``collapse_vs_scratch_p`` (Fisher's exact test of the
    collapse rates; None where a cell has no collapse verdict). A ``running`` cell also gets ``vs_precise``
    and ``collapse_vs_precise_p`` against the same track at the same N with precise statistics: the size of
    the BatchNorm artefact. A ``hybrid`` cell (a pretrained encoder's embedding beside the heart-rate/RR
    features) also gets ``vs_hybrid_random`` against ``hybrid_random`` at the same N: does pretraining add
    anything to physiology that a random encoder's embedding does not. Mutates and returns ``cells``.
    """
    rule = _match(cells, track="hr_rule")
    for cell in cells:
        _vs_controls(cells, cell, rule, metric)
        base = _match(cells, track="scratch", n_labelled=cell.get("n_labelled"),
                      bn_stats=cell.get("bn_stats") or "precise")
        if cell.get("track") != "scratch" and base is not None:
            cell["vs_scratch"] = paired_cells(cell, base, metric)
            cell["collapse_vs_scratch_p"] = fisher_collapse_p(cell, base)
        precise = _match(cells, track=cell.get("track"), method=cell.get("method"), n_labelled=cell.get("n_labelled"),
                         bn_stats="precise")
        if cell.get("bn_stats") == "running" and precise is not None:
            cell["vs_precise"] = paired_cells(cell, precise, metric)
            cell["collapse_vs_precise_p"] = fisher_collapse_p(cell, precise)
    return add_paired_vs(cells, metric, "hybrid_random", ("n_labelled",), tracks=("hybrid",))


def _vs_controls(cells: list[dict], cell: dict, rule: dict | None, metric: str) -> None:
    """``vs_hrv_logreg`` (the same N, paired by seed) and ``vs_hr_rule`` (the zero-label rule) of one cell."""
    if cell.get("track") == "hr_rule":
        return
    if cell.get("track") != "hrv_logreg":
        logreg = _match(cells, track="hrv_logreg", n_labelled=cell.get("n_labelled"))
        if logreg is not None:
            cell["vs_hrv_logreg"] = paired_cells(cell, logreg, metric)
    if rule is not None:
        cell["vs_hr_rule"] = paired_cells(cell, rule, metric)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the order given."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order]) if m else p
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()


def _families(cells: list[dict]) -> dict[str, list[tuple[dict, str, str]]]:
    """A results file's two families of p-values, each member as (holder, key of p, key of its adjusted p)."""
    metric: list[tuple[dict, str, str]] = []
    collapse: list[tuple[dict, str, str]] = []
    for cell in cells:
        for key, value in cell.items():
            if key.startswith("vs_") and isinstance(value, dict):
                metric.append((value, "p_value", "p_holm"))
            elif key.startswith("collapse_") and key.endswith("_p"):
                collapse.append((cell, key, key + "_holm"))
        metric += [(d, "p_value", "p_holm") for d in (cell.get("between_methods") or {}).values()]
    return {name: [m for m in members if m[0].get(m[1]) is not None]  # an undefined p is in no family
            for name, members in (("paired metric contrasts", metric), ("collapse (Fisher)", collapse))}


def add_holm(cells: list[dict]) -> dict[str, Any]:
    """Holm-adjust every p-value of a results file within its family; returns the families' account.

    Two families: the paired metric contrasts (``vs_*`` entries and ``between_methods``), and the Fisher
    tests of collapse rates (``collapse_*_p``). Each contrast dict gains ``p_holm``; each Fisher p gains a
    ``<key>_holm`` beside it. A contrast whose p is undefined (n/a) is not in the family.
    """
    for members in _families(cells).values():
        for (holder, _, adjusted), p in zip(members, holm([h[k] for h, k, _ in members])):
            holder[adjusted] = p
    return holm_account(cells)


def holm_account(cells: list[dict]) -> dict[str, Any]:
    """results.json's ``multiplicity`` block of cells already adjusted (SweepKind.cells does it): the method,
    alpha and how many p-values each family holds."""
    return {"method": "holm", "alpha": 0.05, "families": {n: len(m) for n, m in _families(cells).items()}}


def add_method_contrasts(cells: list[dict], metric: str, methods: Sequence[str],
                         match_keys: tuple[str, ...]) -> list[dict]:
    """Between pretraining methods at the same cell: each SSL cell gets ``between_methods``, the paired
    difference (this method - that one, by seed) to every method listed before its own in ``methods``.

    Cells are matched on the track and ``match_keys`` (fraction, or N and BatchNorm protocol); a cell
    without a method (not an SSL track) gets nothing. Mutates and returns ``cells``.
    """
    order = {m: i for i, m in enumerate(methods)}
    for cell in cells:
        mine = order.get(cell.get("method"), -1)
        others = [c for c in cells if order.get(c.get("method"), len(order)) < mine
                  and c.get("track") == cell.get("track") and all(c.get(k) == cell.get(k) for k in match_keys)]
        if others:
            cell["between_methods"] = {c["method"]: paired_cells(cell, c, metric) for c in others}
    return cells


def _match(cells: list[dict], **keys: Any) -> dict | None:
    """The one cell whose values agree with keys (None when there is none)."""
    found = [c for c in cells if all(c.get(k) == v for k, v in keys.items())]
    if len(found) > 1:
        raise ValueError(f"{len(found)} cells match {keys}")
    return found[0] if found else None


def paired_cells(cell: dict, base: dict, metric: str) -> dict[str, Any]:
    """paired_difference of cell - base over the seeds both hold: mean_diff, ci95, p_value, n_pairs."""
    mine = {r["seed"]: r[metric] for r in cell["per_seed"]}
    theirs = {r["seed"]: r[metric] for r in base["per_seed"]}
    common = sorted(set(mine) & set(theirs), key=_sort_key)
    diff = paired_difference([mine[s] for s in common], [theirs[s] for s in common])
    return {k: diff[k] for k in ("mean_diff", "ci95", "p_value", "n_pairs")}


def constant_macro_f1(y_true: Sequence[int], label: int, n_classes: int) -> float:
    """Macro-F1 of always predicting ``label`` (the trivial few-shot baseline)."""
    from sklearn.metrics import f1_score

    y = np.asarray(y_true, dtype=int)
    pred = np.full_like(y, label)
    return float(f1_score(y, pred, labels=list(range(n_classes)), average="macro", zero_division=0))
