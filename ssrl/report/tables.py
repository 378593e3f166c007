"""Markdown and terminal tables of a results.json dict.

Expected shape (keys other than ``cells`` are optional)::

    {"sweep": "scarcity" | "fewshot", "metric": "test_macro_auroc",
     "baseline_track": "supervised",
     "trivial_baseline": {"name": "always SR", "value": 0.18},
     "cells": [cell, ...]}       # cells as built by ssrl.report.build_cells / add_paired_vs
"""

from __future__ import annotations

from typing import Any

from ssrl.report.stats import collapse_counts, n_labelled_used

NA = "n/a"
ALPHA = 0.05  # significance after Holm's adjustment within the file's family


def fmt(x: float | None, digits: int = 4) -> str:
    """A number with fixed decimals, or 'n/a' for None."""
    return NA if x is None else f"{x:.{digits}f}"


def fmt_p(p: float | None) -> str:
    """A p-value as 'p=0.012', 'p<0.001' or 'p=n/a'."""
    if p is None:
        return f"p={NA}"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def fmt_holm(p: float | None) -> str:
    """A Holm-adjusted p-value as 'Holm 0.028' or 'Holm <0.001'."""
    return f"Holm {fmt_p(p).removeprefix('p=').removeprefix('p')}"


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


def _fmt_n(cell: dict) -> str:
    """The labelled records a cell trained on ('min-max' when its seeds drew different sizes), with the few-shot
    N it is keyed by where the two differ: '65 (N=70)'."""
    used, key = n_labelled_used(cell), cell.get("n_labelled")
    text = NA if used is None else f"{used[0]}-{used[1]}" if isinstance(used, list) else str(used)
    return text if key is None or key == used else f"{text} (N={key})"


def _vs_keys(cells: list[dict], results: dict) -> list[str]:
    """The paired-comparison entries of the table: the baseline's first ('vs_supervised'), then the controls'."""
    base = results.get("baseline_track")
    found = list(dict.fromkeys(k for c in cells for k, v in c.items()
                               if k.startswith("vs_") and k != "vs_precise" and isinstance(v, dict)))
    first = [f"vs_{base}"] if base else found[:1]
    return first + [k for k in found if k not in first]


def fmt_contrast(d: dict) -> str:
    """'+0.0123 [-0.0010, +0.0250] p=0.071 (Holm 0.284) (n=5)', with '*' when significant after Holm."""
    if d.get("mean_diff") is None:
        return NA
    ci = d.get("ci95")
    interval = NA if not ci else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"
    holm = d.get("p_holm")
    star = "*" if holm is not None and holm < ALPHA else ""
    adj = f" ({fmt_holm(holm)})" if holm is not None else ""
    return f"{d['mean_diff']:+.4f}{star} {interval} {fmt_p(d.get('p_value'))}{adj} (n={d['n_pairs']})"


def _collapse(cell: dict, vs: str | None) -> str:
    """Collapsed seeds of all (k/n), with Fisher's p against the baseline when there is one; n/a where the
    rule does not apply (frozen encoders, controls)."""
    counts = collapse_counts(cell)
    if counts is None:
        return NA
    key = f"collapse_{vs}_p" if vs else ""
    if key not in cell or cell[key] is None:
        return f"{counts[0]}/{counts[1]}"
    holm = cell.get(f"{key}_holm")
    return f"{counts[0]}/{counts[1]} ({fmt_p(cell[key])}" + (f", {fmt_holm(holm)})" if holm is not None else ")")


def _row(cell: dict, vs: list[str], has_fraction: bool, has_bn: bool = False) -> list[str]:
    """One table row for one cell."""
    row = [cell_label(cell)]
    if has_bn:
        row.append(str(cell.get("bn_stats", NA)))
    if has_fraction:
        frac = cell.get("fraction")
        row += [NA if frac is None else _fmt_fraction(frac)]
    row += [_fmt_n(cell), str(cell.get("n", len(cell.get("seeds", []))))]
    mean, std = cell.get("mean"), cell.get("std")
    row += [NA if mean is None else f"{fmt(mean)} ± {fmt(std)}", fmt_ci(cell.get("ci95"))]
    row += ["—" if cell.get(k) is None else fmt_contrast(cell[k]) for k in vs]  # —: the baseline itself, or none
    sc = cell.get("single_class_rate")
    row += [_collapse(cell, vs[0] if vs else None), NA if sc is None else f"{100 * sc:.0f} %",
            fmt(cell.get("best_epoch_mean"), 1)]
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
        holm = cell.get("collapse_vs_precise_p_holm")
        lines.append(f"- {cell_label(cell)} at N={cell.get('n_labelled')}: running − precise {metric} "
                     f"{fmt_contrast(d)}; collapse Fisher {fmt_p(cell.get('collapse_vs_precise_p'))}"
                     + (f" ({fmt_holm(holm)})" if holm is not None else ""))
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
                         f"{fmt_contrast(d)}")
    return ["", "Pretraining methods against each other (paired by seed):", *lines] if lines else []


def results_markdown(results: dict[str, Any]) -> str:
    """A markdown section: every cell with mean ± std, 95 % CI, paired Δs (raw and Holm-adjusted p), collapse
    counts and failures; then the BatchNorm and between-method contrasts, the trivial baseline and a legend."""
    cells = results.get("cells", [])
    metric = results.get("metric", "metric")
    vs = _vs_keys(cells, results)
    has_fraction = any("fraction" in c for c in cells)
    has_bn = any("bn_stats" in c for c in cells)
    header = ["track"] + (["BN stats"] if has_bn else []) + (["fraction"] if has_fraction else []) + [
        "n labelled", "seeds ok", f"{metric} mean ± std", "95 % CI"]
    header += [f"Δ {k[3:]} (paired) [95 % CI] p" for k in vs]
    fisher = bool(vs) and any(f"collapse_{vs[0]}_p" in c for c in cells)
    header += ["collapsed" + (f" (Fisher p vs {vs[0][3:]})" if fisher else ""), "single class (test)",
               "best epoch", "failed"]
    title = f"### {results.get('sweep', 'results')}: {metric}"
    lines = [title, ""]
    lines += _table(header, [_row(c, vs, has_fraction, has_bn) for c in cells])
    lines += _artefact_lines(cells, metric)
    lines += _method_lines(cells, metric)
    trivial = results.get("trivial_baseline")
    if trivial:
        lines += ["", f"Trivial baseline ({trivial.get('name', 'constant prediction')}): "
                      f"{metric} {fmt(trivial.get('value'))}"]
    lines += ["", _legend(results)]
    return "\n".join(lines) + "\n"


def _legend(results: dict[str, Any]) -> str:
    """What the table's numbers are, including the size of each family its p-values were adjusted in."""
    fam = (results.get("multiplicity") or {}).get("families") or {}
    holm = ("; p-values are Holm-adjusted within the file's families ("
            + ", ".join(f"{n} {name}" for name, n in fam.items()) + f"); * marks a Δ significant at {ALPHA} "
            "after adjustment") if fam else "; no multiplicity adjustment in this file"
    return ("Mean ± sample std over seeds; 95 % CI of a cell: Student t on the logit scale, mapped back (it "
            "stays inside [0, 1]); Δ is paired by seed (Student t interval, paired t-test); "
            "collapsed = seeds whose best validation epoch is <= 1, compared by Fisher's exact "
            "test; n/a where a rule or number does not apply (frozen encoders and controls have no collapse "
            "verdict); single class = share of seeds whose best model predicts one class on the test fold; "
            "failed seeds are excluded from the statistics" + holm + ".")


def results_table_text(results: dict[str, Any]) -> str:
    """The results table for a terminal (the padded markdown without heading marks)."""
    return results_markdown(results).replace("### ", "", 1)
