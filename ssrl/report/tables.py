"""Markdown and terminal tables of a results.json dict.

Expected shape (keys other than ``cells`` are optional)::

    {"sweep": "scarcity" | "fewshot", "metric": "test_macro_auroc",
     "baseline_track": "supervised",
     "trivial_baseline": {"name": "always SR", "value": 0.18},
     "cells": [cell, ...]}       # cells as built by ssrl.report.build_cells / add_paired_vs
"""

from __future__ import annotations

from typing import Any

NA = "n/a"


def fmt(x: float | None, digits: int = 4) -> str:
    """A number with fixed decimals, or 'n/a' for None."""
    return NA if x is None else f"{x:.{digits}f}"


def fmt_p(p: float | None) -> str:
    """A p-value as 'p=0.012', 'p<0.001' or 'p=n/a'."""
    if p is None:
        return f"p={NA}"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def fmt_ci(ci: list[float] | None, digits: int = 4) -> str:
    """An interval as '[lo, hi]' or 'n/a'."""
    return NA if not ci else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def track_label(track: str, method: str | None = None) -> str:
    """'ssl_finetune[masked]' for an SSL track and its pretraining method, else the bare track."""
    return f"{track}[{method}]" if method else track


def cell_label(cell: dict) -> str:
    """A results cell's track as tables and plots name it (the method in brackets for SSL tracks)."""
    return track_label(str(cell.get("track", NA)), cell.get("method"))


def _fmt_fraction(f: float) -> str:
    """0.1 -> '10 %'."""
    return f"{100 * f:g} %"


def _fmt_n(n: int | list[int] | None) -> str:
    """n labelled; a [min, max] pair when seeds drew different sizes."""
    if n is None:
        return NA
    return f"{n[0]}-{n[1]}" if isinstance(n, list) else str(n)


def _vs_key(cells: list[dict], results: dict) -> str | None:
    """The name of the paired-comparison entry ('vs_supervised' by default), if any."""
    base = results.get("baseline_track")
    if base:
        return f"vs_{base}"
    for cell in cells:
        for k in cell:
            if k.startswith("vs_"):
                return k
    return None


def _collapse(cell: dict, vs: str | None) -> str:
    """Collapse rate, with Fisher's p against the baseline when there is one; n/a where the rule does not apply."""
    cr = cell.get("collapse_rate")
    if cr is None:
        return NA
    key = f"collapse_{vs}_p" if vs else ""
    return f"{100 * cr:.0f} % ({fmt_p(cell[key])})" if key in cell else f"{100 * cr:.0f} %"


def _row(cell: dict, vs: str | None, has_fraction: bool, has_bn: bool = False) -> list[str]:
    """One table row for one cell."""
    row = [cell_label(cell)]
    if has_bn:
        row.append(str(cell.get("bn_stats", NA)))
    if has_fraction:
        frac = cell.get("fraction")
        row += [NA if frac is None else _fmt_fraction(frac)]
    row += [_fmt_n(cell.get("n_labelled")), str(cell.get("n", len(cell.get("seeds", []))))]
    mean, std = cell.get("mean"), cell.get("std")
    row += [NA if mean is None else f"{fmt(mean)} ± {fmt(std)}", fmt_ci(cell.get("ci95"))]
    if vs:
        d = cell.get(vs)
        if d is None:
            row.append("—")  # the baseline itself, or no matching baseline cell
        elif d.get("mean_diff") is None:
            row.append(NA)
        else:
            row.append(f"{d['mean_diff']:+.4f} {fmt_ci(d['ci95'])} {fmt_p(d['p_value'])} (n={d['n_pairs']})")
    sc = cell.get("single_class_rate")
    row += [_collapse(cell, vs), NA if sc is None else f"{100 * sc:.0f} %", fmt(cell.get("best_epoch_mean"), 1)]
    failed = cell.get("failed") or []
    seeds = ", ".join(str(f["seed"]) for f in failed)
    row.append(f"{len(failed)} (seed{'s' if len(failed) > 1 else ''} {seeds})" if failed else "0")
    return row


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown table lines with padded columns (readable raw in a terminal too)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]


def _artefact_lines(cells: list[dict], metric: str) -> list[str]:
    """The BatchNorm artefact: each running-statistics cell against the same condition with precise ones."""
    lines = []
    for cell in cells:
        d = cell.get("vs_precise")
        if d is None or d.get("mean_diff") is None:
            continue
        lines.append(f"- {cell_label(cell)} at N={cell.get('n_labelled')}: running − precise {metric} "
                     f"{d['mean_diff']:+.4f} {fmt_ci(d['ci95'])} {fmt_p(d['p_value'])} (n={d['n_pairs']}); "
                     f"collapse Fisher {fmt_p(cell.get('collapse_vs_precise_p'))}")
    return ["", "BatchNorm statistics, the reference's running averages against precise ones (paired by seed):",
            *lines] if lines else []


def _method_lines(cells: list[dict], metric: str) -> list[str]:
    """Pretraining methods against each other at the same cell (paired by seed)."""
    lines = []
    for cell in cells:
        for other, d in (cell.get("between_methods") or {}).items():
            if d.get("mean_diff") is None:
                continue
            where = (f"{_fmt_fraction(cell['fraction'])}" if cell.get("fraction") is not None
                     else f"N={cell.get('n_labelled')}" + (f" ({cell['bn_stats']} BN)" if cell.get("bn_stats") else ""))
            lines.append(f"- {cell.get('track')} at {where}: {cell.get('method')} − {other} {metric} "
                         f"{d['mean_diff']:+.4f} {fmt_ci(d['ci95'])} {fmt_p(d['p_value'])} (n={d['n_pairs']})")
    return ["", "Pretraining methods against each other (paired by seed):", *lines] if lines else []


def results_markdown(results: dict[str, Any]) -> str:
    """A markdown section: one row per cell with mean ± std, 95 % CI, paired diff, collapse, failures."""
    cells = results.get("cells", [])
    metric = results.get("metric", "metric")
    vs = _vs_key(cells, results)
    has_fraction = any("fraction" in c for c in cells)
    has_bn = any("bn_stats" in c for c in cells)
    header = ["track"] + (["BN stats"] if has_bn else []) + (["fraction"] if has_fraction else []) + [
        "n labelled", "seeds ok", f"{metric} mean ± std", "95 % CI"]
    if vs:
        header += [f"Δ {vs[3:]} (paired) [95 % CI] p"]
    fisher = vs is not None and any(f"collapse_{vs}_p" in c for c in cells)
    header += ["collapse" + (f" (Fisher p vs {vs[3:]})" if fisher else ""), "single class (test)", "best epoch",
               "failed"]
    title = f"### {results.get('sweep', 'results')}: {metric}"
    lines = [title, ""]
    lines += _table(header, [_row(c, vs, has_fraction, has_bn) for c in cells])
    lines += _artefact_lines(cells, metric)
    lines += _method_lines(cells, metric)
    trivial = results.get("trivial_baseline")
    if trivial:
        lines += ["", f"Trivial baseline ({trivial.get('name', 'constant prediction')}): "
                      f"{metric} {fmt(trivial.get('value'))}"]
    lines += ["", "Mean ± sample std over seeds; 95 % CI from the Student t distribution; "
                  "Δ is paired by seed (paired t-test); collapse rates are compared by Fisher's exact test; "
                  "collapse is n/a where the rule does not apply (frozen encoders); single class = share of "
                  "seeds whose best model predicts one class on the test fold; failed seeds are excluded "
                  "from the statistics."]
    return "\n".join(lines) + "\n"


def results_table_text(results: dict[str, Any]) -> str:
    """The results table for a terminal (the padded markdown without heading marks)."""
    return results_markdown(results).replace("### ", "", 1)
