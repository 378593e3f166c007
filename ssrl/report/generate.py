"""Results tables generated from results files, in the docs and on the command line.

    python -m ssrl.report markdown docs/results/fewshot-cpu-full.json     # the file's whole table
    python -m ssrl.report docs README.md docs/RESULTS.md [--write]       # check (or rewrite) generated blocks
    python -m ssrl.report restat docs/results/*.json                      # today's statistics, same seeds

A generated block in a markdown file sits between ``<!-- generated: docs/results/NAME.json -->`` and
``<!-- end generated -->`` and holds exactly what ``markdown`` prints for that file. ``check_docs`` also reads the
prose of every section that holds a block: a signed difference (``+0.045``) or a collapse count (``1 of 5``,
``1/5 collapsed``) that no results file of that section holds is reported, so hand-typed numbers cannot drift.

A results file written by an older version of the statistics (``stats_version``) has its cells' statistics
recomputed here from its per-seed values, with the same code the runner uses; the table says so, and
``restat`` rewrites the file so. A file from before the realised labelled count was ``n_labelled_used`` holds it
as ``n_labelled``: tables read it there (ssrl.report.stats.n_labelled_used), and ``restat`` renames it.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

from ssrl.kinds import kind_of
from ssrl.report.io import write_json_atomic, write_text_atomic
from ssrl.report.stats import STATS_VERSION, collapse_counts, holm_account, n_labelled_used
from ssrl.report.tables import results_markdown

BLOCK = re.compile(r"(<!-- generated: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)
SIGNED = re.compile(r"(?<![\w.])[+−-]0\.\d{2,4}\b")  # a difference as the prose states it: +0.045, −0.077
COUNT = re.compile(r"\b(\d+) (?:of|out of) (\d+)\b|\b(\d+)/(\d+) collapsed")
TOLERANCE_RECOMPUTED = 1e-12  # a recomputed cell mean must equal the file's


def load_results(path: Path) -> dict[str, Any]:
    """A results file with today's statistics: as written, or recomputed from its per-seed values when an
    older version of the statistics wrote it (before Holm adjustment or logit-scale intervals)."""
    results = json.loads(Path(path).read_text())
    if results.get("stats_version") == STATS_VERSION:
        return results
    return {**rebuilt(results, path), "recomputed": True}


def rebuilt(results: dict[str, Any], path: Path) -> dict[str, Any]:
    """results with its cells rebuilt from its own per-seed values by today's code (statistics and field names);
    a ValueError when a cell's mean does not come out as the file says."""
    kind = kind_of(results["sweep"])
    cells = kind.cells(rows_of(results), results["metric"], methods_of(results))
    before = {cell_key(c, kind.cell_keys): c.get("mean") for c in results["cells"]}
    for c in cells:
        old = before.get(cell_key(c, kind.cell_keys))
        if (old is None) != (c["mean"] is None) or (old is not None and abs(old - c["mean"]) > TOLERANCE_RECOMPUTED):
            raise ValueError(f"{path}: cell {cell_key(c, kind.cell_keys)} recomputes to mean {c['mean']}, "
                             f"the file says {old}; the file is inconsistent")
    return {**results, "cells": cells, "multiplicity": holm_account(cells), "stats_version": STATS_VERSION}


def old_names(results: dict[str, Any]) -> bool:
    """Whether a results file holds its realised labelled counts as ``n_labelled`` (written before they were
    ``n_labelled_used``: every cell built since carries that field)."""
    return any("n_labelled_used" not in c for c in results["cells"])


def rows_of(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-seed rows a results file's cells were built from (failed seeds as failed rows), under today's names:
    a row of an older file gets its realised count as ``n_labelled_used`` (per seed where the file kept it, else
    its cell's), and ``n_labelled`` only where that is the cell's key."""
    keys_of = kind_of(results["sweep"]).cell_keys
    rows = []
    for cell in results["cells"]:
        keys = {k: cell.get(k) for k in keys_of}
        for r in cell.get("per_seed", []):
            row = {**keys, **r, "status": "ok"}
            if "n_labelled_used" not in cell:  # an older file (old_names)
                row["n_labelled_used"] = n_labelled_used({**cell, **r})
                if "n_labelled" not in keys_of:
                    row.pop("n_labelled", None)
            rows.append(row)
        rows += [{**keys, "seed": f["seed"], "status": "failed", "error": f["error"]} for f in cell.get("failed", [])]
    return rows


def methods_of(results: dict[str, Any]) -> list[str]:
    """The encoders a results file's SSL tracks start from, in the sweep's order: the methods pretrained here,
    then the encoders pretrained elsewhere (`pretrained`)."""
    named = [*(results.get("pretraining") or {}).get("methods", []), *(e["name"] for e in results.get("pretrained", []))]
    return named or list(dict.fromkeys(c["method"] for c in results["cells"] if c.get("method")))


def cell_key(cell: dict, keys: tuple[str, ...]) -> tuple:
    """Where a cell or a per-seed row sits: its values of a kind's cell_keys."""
    return tuple(cell.get(k) for k in keys)


def markdown(path: Path) -> str:
    """What a generated block of ``path`` holds: the results file's whole table."""
    results = load_results(path)
    text = results_markdown(results)
    if results.get("recomputed"):
        text += ("\nThis file was written by an older version of the statistics: its cells were recomputed from its "
                 "per-seed values (every mean agrees with the file; `python -m ssrl.report restat` rewrites it).\n")
    return text


def restat(path: Path) -> bool:
    """Rewrite a results file with today's statistics and field names from its own per-seed values; False if
    already current.

    Only the cells, the multiplicity account and the version change; every per-seed value stays as it was, the
    realised labelled count of an older file moving from ``n_labelled`` to ``n_labelled_used`` (rebuilt checks
    that every cell mean agrees). The file is replaced atomically."""
    results = json.loads(Path(path).read_text())
    if results.get("stats_version") == STATS_VERSION and not old_names(results):
        return False
    write_json_atomic(path, rebuilt(results, path))
    return True


def regenerate(text: str, root: Path) -> str:
    """text with every generated block's body replaced by markdown() of the file it names (paths from root)."""
    return BLOCK.sub(lambda m: m.group(1) + markdown(root / m.group("path")) + m.group(4), text)


def _sections(text: str) -> list[str]:
    """The level-2 sections of a markdown text (## heading to the next one)."""
    return re.split(r"\n(?=## )", text)


def _numbers_held(results: dict[str, Any]) -> tuple[set[float], set[tuple[int, int]]]:
    """Every difference a results file holds (mean_diff, CI bounds) and every collapse count (k, n)."""
    diffs, counts = set(), set()

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            if obj.get("mean_diff") is not None:
                diffs.add(obj["mean_diff"])
                diffs.update(obj.get("ci95") or [])
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    walk(results["cells"])
    for cell in results["cells"]:
        c = collapse_counts(cell)
        if c is not None:
            counts.add(c)
    return diffs, counts


def check_prose(section: str, results: list[dict[str, Any]]) -> list[str]:
    """Numbers the prose of a section states (outside its generated blocks) that none of its results files hold."""
    prose = BLOCK.sub("", section)
    held = [_numbers_held(r) for r in results]
    diffs = set().union(*(d for d, _ in held)) if held else set()
    counts = set().union(*(c for _, c in held)) if held else set()
    bad = []
    for m in SIGNED.finditer(prose):
        stated = float(m.group(0).replace("−", "-"))
        digits = len(m.group(0).split(".")[1])
        if not any(math.isclose(round(d, digits), stated, abs_tol=10 ** -(digits + 3)) for d in diffs):
            bad.append(f"difference {m.group(0)} ('{_around(prose, m)}') is in none of the section's results files")
    for m in COUNT.finditer(prose):
        k, n = (int(g) for g in (m.group(1, 2) if m.group(1) else m.group(3, 4)))
        if "collaps" in _around(prose, m, 80) and (k, n) not in counts:
            bad.append(f"collapse count {m.group(0)} ('{_around(prose, m)}') is in none of the section's results files")
    return bad


def _around(text: str, m: re.Match, width: int = 40) -> str:
    return " ".join(text[max(0, m.start() - width):m.end() + width].split())


def check_docs(path: Path, root: Path) -> list[str]:
    """Problems of one markdown file: a generated block that differs from its file, or prose numbers that
    no results file of its section holds."""
    text = path.read_text()
    bad = [f"{path}: the generated block of {m.group('path')} differs from `python -m ssrl.report markdown "
           f"{m.group('path')}`" for m in BLOCK.finditer(text) if m.group("body") != markdown(root / m.group("path"))]
    for section in _sections(text):
        files = [m.group("path") for m in BLOCK.finditer(section)]
        if files:
            heading = section.splitlines()[0][:60]
            bad += [f"{path} ({heading}): {b}" for b in check_prose(section, [load_results(root / f) for f in files])]
    return bad


def main(argv: list[str] | None = None) -> int:
    """python -m ssrl.report markdown FILE | docs FILE... [--write]."""
    p = argparse.ArgumentParser(prog="python -m ssrl.report", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    md = sub.add_parser("markdown", help="print a results file's whole table")
    md.add_argument("file", type=Path)
    docs = sub.add_parser("docs", help="check the generated blocks and prose numbers of markdown files")
    docs.add_argument("files", type=Path, nargs="+")
    docs.add_argument("--write", action="store_true", help="rewrite the generated blocks in place first")
    docs.add_argument("--root", type=Path, default=Path("."), help="where block paths start (default: .)")
    re_ = sub.add_parser("restat", help="rewrite results files with today's statistics and field names from their per-seed values")
    re_.add_argument("files", type=Path, nargs="+")
    args = p.parse_args(argv)
    try:
        if args.cmd == "markdown":
            print(markdown(args.file), end="")
            return 0
        if args.cmd == "restat":
            for f in args.files:
                print(f"{f}: {'rewritten' if restat(f) else 'already current'}")
            return 0
        bad = []
        for f in args.files:
            if args.write:
                write_text_atomic(f, regenerate(f.read_text(), args.root))
            bad += check_docs(f, args.root)
    except (OSError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in bad:
        print(line)
    return 1 if bad else 0

