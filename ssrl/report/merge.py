"""Several runs of one benchmark on the same data as one results file, so their cells pair by seed.

    python -m ssrl.report merge A.json B.json --predictions A.npz B.npz --out C.json [--replace]

Runs that drew their label subsets with the same seeds on the same data hold the same subsets (the subset
depends on the seed, N or fraction, and the labels only), so a condition run later (a new control, say) pairs
with the conditions of an earlier run. The merge refuses runs of different benchmarks, metrics, task, rate or
test fold (the predictions files' test records and labels must agree), and a cell that two runs both hold
(unless ``--replace``: the later run's cell wins, e.g. a control re-run after a fix, and the file says so).
The cells and every contrast are rebuilt from the per-seed values with the code the runner uses, Holm included;
the predictions files are joined, so ``rescore`` checks the merged file like any other. ``merged_from`` names
each run (its run id, scale, precision, pretraining and data fingerprint).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ssrl.kinds import kind_of
from ssrl.report.generate import cell_key, methods_of, rows_of
from ssrl.report.io import write_bytes_atomic, write_json_atomic
from ssrl.report.rescore import read_meta
from ssrl.report.stats import STATS_VERSION, holm_account

SAME = ("sweep", "metric")
SAME_DATA = ("name", "sampling_rate", "task")


def merge(results: list[dict[str, Any]], names: list[str], replace: bool = False) -> dict[str, Any]:
    """One results dict from several runs' results (cells rebuilt, contrasts and Holm over all of them).

    A cell two runs both hold is an error, unless ``replace``: then the later run's cell replaces the earlier
    one (a control re-run after a fix), and ``merged_from`` lists what each run lost.
    """
    first = results[0]
    for res, name in zip(results[1:], names[1:]):
        for key in SAME:
            if res.get(key) != first.get(key):
                raise ValueError(f"{name}: {key} {res.get(key)!r} differs from {names[0]}'s {first.get(key)!r}")
        for key in SAME_DATA:
            if res["dataset"].get(key) != first["dataset"].get(key):
                raise ValueError(f"{name}: dataset {key} differs from {names[0]}'s")
        a, b = first.get("trivial_baseline"), res.get("trivial_baseline")
        if (a is None) != (b is None) or (a and (a["class"] != b["class"] or not math.isclose(a["value"], b["value"]))):
            raise ValueError(f"{name}: the trivial baseline differs from {names[0]}'s: not the same test fold")
    kind = kind_of(first["sweep"])
    dropped = replaced_cells(results, names, replace)
    rows = []
    for res, gone in zip(results, dropped):
        rows += [r for r in rows_of(res) if cell_key(r, kind.cell_keys) not in gone]
    methods = list(dict.fromkeys(m for res in results for m in methods_of(res)))
    cells = kind.cells(rows, first["metric"], methods)
    out = {k: first[k] for k in ("sweep", "dataset", "metric") if k in first}
    out["dataset"] = {**first["dataset"], "fingerprint": [r["dataset"].get("fingerprint") for r in results]}
    out.update(scale=first.get("scale"), run_id=[r.get("run_id") for r in results], cells=cells,
               n_runs=len(rows), n_failed=sum(r["status"] != "ok" for r in rows),
               n_skipped=sum("skipped" in str(r.get("error", "")) for r in rows),
               precision={"requested": sorted({r["precision"]["requested"] for r in results if r.get("precision")}),
                          "used": sorted({u for r in results for u in (r.get("precision") or {}).get("used", [])})},
               multiplicity=holm_account(cells), stats_version=STATS_VERSION,
               merged_from=[{"file": n, "run_id": r.get("run_id"), "scale": r.get("scale"),
                             "precision": r.get("precision"), "pretraining": r.get("pretraining"),
                             "fingerprint": r["dataset"].get("fingerprint"), "cells": len(r["cells"]),
                             "replaced": [list(k) for k in sorted(gone, key=str)]}
                            for r, n, gone in zip(results, names, dropped)])
    pre = pretraining(results)
    if pre:
        out["pretraining"] = pre
    for key in ("baseline_track", "trivial_baseline"):
        if key in first:
            out[key] = first[key]
    return out


def pretraining(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The merged file's account of its encoders: every run's methods, per seed only when every run's were,
    and per method which seeds had an encoder of their own (``by_method``; a method that two runs pretrained
    differently is listed with each account)."""
    blocks = [r["pretraining"] for r in results if r.get("pretraining")]
    if len(blocks) <= 1:
        return blocks[0] if blocks else None
    by_method: dict[str, list[dict]] = {}
    for block in blocks:
        for m in block.get("methods", []):
            account = {"per_seed": block.get("per_seed"), "seeds": block.get("seeds"), "selection": block.get("selection")}
            if account not in by_method.setdefault(m, []):
                by_method[m].append(account)
    selections = sorted({str(b.get("selection")) for b in blocks})
    return {"methods": list(by_method), "selection": selections[0] if len(selections) == 1 else selections,
            "per_seed": all(b.get("per_seed") for b in blocks),
            "seeds": sorted({s for b in blocks for s in b.get("seeds") or []}),
            "by_method": {m: a[0] if len(a) == 1 else a for m, a in by_method.items()}}


def replaced_cells(results: list[dict[str, Any]], names: list[str], replace: bool) -> list[set[tuple]]:
    """Per run, the cell keys a later run replaces (empty sets without ``replace``, where a repeat is an error)."""
    keys_of = kind_of(results[0]["sweep"]).cell_keys
    seen: dict[tuple, str] = {}
    out: list[set[tuple]] = [set() for _ in results]
    for i in reversed(range(len(results))):
        for cell in results[i]["cells"]:
            key = cell_key(cell, keys_of)
            if key in seen:
                if not replace:
                    raise ValueError(f"{names[i]} and {seen[key]} both hold the cell {key}; merge runs of different "
                                     "cells, or give --replace to let the later run's cell replace it")
                out[i].add(key)
            else:
                seen[key] = names[i]
    return out


def merge_predictions(paths: list[Path], dropped: list[set[tuple]] | None = None,
                      cell_keys: tuple[str, ...] = ()) -> bytes:
    """The predictions files joined (one npz): every run must hold the same test records and labels; the
    trials of ``dropped`` cells (per file, keyed by ``cell_keys``) are left out."""
    parts = [np.load(p, allow_pickle=False) for p in paths]
    first = parts[0]
    probs, meta = [], {}
    for i, (z, path) in enumerate(zip(parts, paths)):
        if str(z["metric"]) != str(first["metric"]) or not np.array_equal(z["classes"], first["classes"]):
            raise ValueError(f"{path}: metric or classes differ from {paths[0]}'s")
        if not np.array_equal(np.sort(z["ecg_id"]), np.sort(first["ecg_id"])):
            raise ValueError(f"{path}: its test records differ from {paths[0]}'s")
        where = {int(e): i for i, e in enumerate(z["ecg_id"])}
        order = [where[int(e)] for e in first["ecg_id"]]
        if not np.array_equal(np.asarray(z["y"])[order], first["y"]):
            raise ValueError(f"{path}: its test labels differ from {paths[0]}'s")
        trial_meta = read_meta(z)  # every file under today's names, so the lists join trial by trial
        gone = dropped[i] if dropped else set()
        keep = [t for t in range(len(z["prob"])) if tuple(trial_meta[k][t] for k in cell_keys) not in gone]
        probs.append(np.asarray(z["prob"])[keep][:, order])
        for k, v in trial_meta.items():
            meta.setdefault(k, []).extend(v[t] for t in keep)
    buf = io.BytesIO()
    np.savez_compressed(buf, prob=np.concatenate(probs).astype(np.float32), ecg_id=first["ecg_id"], y=first["y"],
                        classes=first["classes"], metric=first["metric"], meta=np.asarray(json.dumps(meta)))
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    """python -m ssrl.report merge A.json B.json... --predictions A.npz B.npz... --out C.json."""
    p = argparse.ArgumentParser(prog="python -m ssrl.report merge", description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, nargs="+")
    p.add_argument("--predictions", type=Path, nargs="+", required=True, help="each run's predictions file, in order")
    p.add_argument("--out", type=Path, required=True, help="the merged results.json; its predictions go beside it")
    p.add_argument("--replace", action="store_true",
                   help="a cell held by two runs is taken from the later one (default: an error)")
    args = p.parse_args(argv)
    if len(args.predictions) != len(args.results):
        print("error: give one --predictions file per results file, in the same order", file=sys.stderr)
        return 2
    dest = args.out.with_name(args.out.stem + "-predictions.npz")
    if args.out.exists() or dest.exists():
        print(f"error: {args.out} or {dest} exists; choose another --out (nothing was overwritten)", file=sys.stderr)
        return 2
    try:
        results, names = [json.loads(r.read_text()) for r in args.results], [r.name for r in args.results]
        merged = merge(results, names, args.replace)
        dropped = [{tuple(k) for k in run["replaced"]} for run in merged["merged_from"]]  # what merge left out
        blob = merge_predictions(args.predictions, dropped, kind_of(results[0]["sweep"]).cell_keys)
    except (OSError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_bytes_atomic(dest, blob)
    write_json_atomic(args.out, merged)
    print(f"{args.out}: {len(merged['cells'])} cells from {len(args.results)} runs; predictions in {dest}")
    return 0
