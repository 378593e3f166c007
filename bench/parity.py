"""Paired comparison of two runs of one sweep (e.g. fp32 and bf16): per cell, the seed-paired difference.

    python -m bench.parity RUN_A/scarcity/results.json RUN_B/scarcity/results.json [--json]

Cells are matched by track and fraction (or N); seeds are paired within a cell. Each row gives
B - A: the mean difference of the sweep's metric over seeds, its t interval and paired p-value
(ssrl.report.stats.paired_difference), and whether the interval holds 0. A last row pools every
pair of every cell.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ssrl.report.stats import paired_difference


def _cell_key(cell: dict) -> tuple:
    return cell["track"], cell.get("fraction"), cell.get("n_labelled") if "fraction" not in cell else None


def _per_seed(cell: dict, metric: str) -> dict[Any, float]:
    return {r_seed: float(r[metric]) for r_seed, r in zip(cell["seeds"], cell["per_seed"]) if metric in r}


def compare(a: dict, b: dict) -> dict[str, Any]:
    """Per matched cell and pooled: the paired difference B - A of the metric over common seeds."""
    if a["metric"] != b["metric"] or a["sweep"] != b["sweep"]:
        raise SystemExit(f"error: the runs differ in sweep or metric ({a['sweep']}/{a['metric']} vs "
                         f"{b['sweep']}/{b['metric']}); compare two runs of one sweep")
    metric, cells_b = a["metric"], {_cell_key(c): c for c in b["cells"]}
    rows, pooled_a, pooled_b = [], [], []
    for cell in a["cells"]:
        other = cells_b.get(_cell_key(cell))
        if other is None:
            continue
        va, vb = _per_seed(cell, metric), _per_seed(other, metric)
        seeds = sorted(set(va) & set(vb))
        xa, xb = [va[s] for s in seeds], [vb[s] for s in seeds]
        diff = paired_difference(xb, xa)
        ci = diff["ci95"]
        rows.append({"track": cell["track"], "where": cell.get("fraction", cell.get("n_labelled")),
                     "mean_a": sum(xa) / len(xa), "mean_b": sum(xb) / len(xb), **diff,
                     "ci_holds_0": None if ci is None else ci[0] <= 0 <= ci[1]})
        pooled_a += xa
        pooled_b += xb
    return {"metric": metric, "a": a.get("precision"), "b": b.get("precision"), "cells": rows,
            "pooled": paired_difference(pooled_b, pooled_a)}


def markdown(res: dict[str, Any]) -> str:
    """The comparison as a Markdown table."""
    lines = ["| track | at | A | B | B - A | 95 % CI | p | n |", "|---|---|---|---|---|---|---|---|"]
    for r in res["cells"]:
        ci = "n/a" if r["ci95"] is None else f"[{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]"
        p = "n/a" if r["p_value"] is None else f"{r['p_value']:.2f}"
        lines.append(f"| {r['track']} | {r['where']} | {r['mean_a']:.4f} | {r['mean_b']:.4f} | "
                     f"{r['mean_diff']:+.4f} | {ci} | {p} | {r['n_pairs']} |")
    pool = res["pooled"]
    lines.append(f"| all cells | pooled | | | {pool['mean_diff']:+.4f} | [{pool['ci95'][0]:+.4f}, "
                 f"{pool['ci95'][1]:+.4f}] | {pool['p_value']:.2f} | {pool['n_pairs']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Read two results.json files and print the comparison."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    res = compare(json.loads(args.a.read_text()), json.loads(args.b.read_text()))
    print(json.dumps(res, indent=1) if args.json else markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
