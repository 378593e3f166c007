"""Several runs of one benchmark on the same data as one results file, so their cells pair by seed.

    python -m ssrl.report merge A.json B.json --predictions A.npz B.npz --out C.json [--replace | --add-seeds]

Runs that drew their label subsets with the same seeds on the same data hold the same subsets (the subset
depends on the seed, N or fraction, and the labels only), so a condition run later (a new control, say) pairs
with the conditions of an earlier run. The merge refuses runs of different benchmarks, metrics, task, rate or
test fold (the predictions files' test records and labels must agree), and a cell that two runs both hold
(unless ``--replace``: the later run's cell wins, e.g. a control re-run after a fix, and the file says so).
``--add-seeds`` pools the seeds of a cell that several runs of one protocol hold (the same scale, precision and
kind of pretraining), so a benchmark grows seed by seed over several runs: a seed that two runs both hold must
score the same in both (a deterministic re-run, such as the controls beside new seeds), and is kept once.
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
from ssrl.report.rescore import predictions_beside, read_meta
from ssrl.report.stats import STATS_VERSION, holm_account

SAME = ("sweep", "metric")
SAME_DATA = ("name", "sampling_rate", "task")


def merge(results: list[dict[str, Any]], names: list[str], replace: bool = False,
          add_seeds: bool = False) -> dict[str, Any]:
    """One results dict from several runs' results (cells rebuilt, contrasts and Holm over all of them).

    A cell two runs both hold is an error, unless ``replace``: then the later run's cell replaces the earlier
    one (a control re-run after a fix), and ``merged_from`` lists what each run lost. With ``add_seeds`` the
    cell holds the seeds of both runs instead; a seed both hold must score the same and is kept once
    (``merged_from`` lists each run's seeds that a later run repeated).
    """
    if replace and add_seeds:
        raise ValueError("--replace and --add-seeds: give one (replace a re-run cell, or pool a cell's seeds)")
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
    if add_seeds:
        same_protocol(results, names)
    dropped = [set() for _ in results] if add_seeds else replaced_cells(results, names, replace)
    repeated = repeated_seeds(results, names) if add_seeds else [set() for _ in results]
    rows = []
    for res, gone, again in zip(results, dropped, repeated):
        rows += [r for r in rows_of(res) if cell_key(r, kind.cell_keys) not in gone
                 and (*cell_key(r, kind.cell_keys), r["seed"]) not in again]
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
                             "replaced": [list(k) for k in sorted(gone, key=str)],
                             **({"repeated": [list(k) for k in sorted(again, key=str)]} if add_seeds else {})}
                            for r, n, gone, again in zip(results, names, dropped, repeated)])
    pre = pretraining(results)
    if pre:
        out["pretraining"] = pre
    for key in ("baseline_track", "trivial_baseline"):
        if key in first:
            out[key] = first[key]
    return out


def pretraining(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The merged file's account of its encoders: every run's methods, per seed only when every run's were,
    and per method which seeds had an encoder of their own (``by_method``: runs that pretrained a method the
    same way pool their seeds; a method that two runs pretrained differently is listed with each account)."""
    blocks = [r["pretraining"] for r in results if r.get("pretraining")]
    if len(blocks) <= 1:
        return blocks[0] if blocks else None
    by_method: dict[str, list[dict]] = {}
    for block in blocks:
        for m in block.get("methods", []):
            account = {"per_seed": block.get("per_seed"), "seeds": block.get("seeds"), "selection": block.get("selection")}
            alike = [a for a in by_method.setdefault(m, []) if (a["per_seed"], a["selection"]) == (
                account["per_seed"], account["selection"]) and account["per_seed"]]
            if alike:  # encoders of their own for more seeds, pretrained alike
                alike[0]["seeds"] = sorted({*alike[0]["seeds"], *account["seeds"]})
            elif account not in by_method[m]:
                by_method[m].append(account)
    selections = sorted({str(b.get("selection")) for b in blocks})
    return {"methods": list(by_method), "selection": selections[0] if len(selections) == 1 else selections,
            "per_seed": all(b.get("per_seed") for b in blocks),
            "seeds": sorted({s for b in blocks for s in b.get("seeds") or []}),
            "by_method": {m: a[0] if len(a) == 1 else a for m, a in by_method.items()}}


def same_protocol(results: list[dict[str, Any]], names: list[str]) -> None:
    """Runs whose seeds pool into one cell: the same scale and precision, and each method they share pretrained
    the same way (one encoder per seed, or one shared, chosen alike); else a one-line error naming the run."""
    first = results[0]
    for res, name in zip(results[1:], names[1:]):
        for what, get in (("scale", lambda r: r.get("scale")),
                          ("precision", lambda r: sorted((r.get("precision") or {}).get("used", [])))):
            if get(res) != get(first):
                raise ValueError(f"{name}: {what} {get(res)!r} differs from {names[0]}'s {get(first)!r}; --add-seeds "
                                 "pools the seeds of runs of one protocol only")
        a, b = first.get("pretraining") or {}, res.get("pretraining") or {}
        for m in set(a.get("methods", [])) & set(b.get("methods", [])):
            if (a.get("per_seed"), a.get("selection")) != (b.get("per_seed"), b.get("selection")):
                raise ValueError(f"{name}: method {m} was pretrained otherwise than in {names[0]} (per_seed, "
                                 "selection); --add-seeds pools the seeds of runs of one protocol only")


def repeated_seeds(results: list[dict[str, Any]], names: list[str]) -> list[set[tuple]]:
    """Per run, the (cell key, seed) rows a later run holds as well: kept once, from the later run. Both must
    score the same on the file's metric (a deterministic re-run); a seed scored differently, or failed in one
    run only, is an error."""
    keys_of = kind_of(results[0]["sweep"]).cell_keys
    metric = results[0]["metric"]
    seen: dict[tuple, tuple[str, Any]] = {}
    out: list[set[tuple]] = [set() for _ in results]
    for i in reversed(range(len(results))):
        for row in rows_of(results[i]):
            key = (*cell_key(row, keys_of), row["seed"])
            score = row.get(metric) if row["status"] == "ok" else None
            if key not in seen:
                seen[key] = (names[i], score)
                continue
            later, other = seen[key]
            if score is None or other is None or not math.isclose(score, other, rel_tol=0.0, abs_tol=1e-12):
                raise ValueError(f"{names[i]} and {later} both hold seed {row['seed']} of the cell {key[:-1]}, scored "
                                 f"{score} and {other}: not a re-run of one protocol; pool runs of one protocol, or "
                                 "give --replace to take the later run's cell")
            out[i].add(key)
    return out


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
                      cell_keys: tuple[str, ...] = (), repeated: list[set[tuple]] | None = None) -> bytes:
    """The predictions files joined (one npz): every run must hold the same test records and labels; the
    trials of ``dropped`` cells (per file, keyed by ``cell_keys``) and of ``repeated`` seeds (keyed by
    ``cell_keys`` and the seed) are left out."""
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
        gone, again = dropped[i] if dropped else set(), repeated[i] if repeated else set()
        keep = [t for t in range(len(z["prob"])) if tuple(trial_meta[k][t] for k in cell_keys) not in gone
                and (*(trial_meta[k][t] for k in cell_keys), trial_meta["seed"][t]) not in again]
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
    how = p.add_mutually_exclusive_group()
    how.add_argument("--replace", action="store_true",
                     help="a cell held by two runs is taken from the later one (default: an error)")
    how.add_argument("--add-seeds", action="store_true",
                     help="a cell held by runs of one protocol holds the seeds of all of them; a seed two runs "
                          "hold must score the same in both (default: an error)")
    args = p.parse_args(argv)
    if len(args.predictions) != len(args.results):
        print("error: give one --predictions file per results file, in the same order", file=sys.stderr)
        return 2
    dest = predictions_beside(args.out)
    if args.out.exists() or dest.exists():
        print(f"error: {args.out} or {dest} exists; choose another --out (nothing was overwritten)", file=sys.stderr)
        return 2
    try:
        results, names = [json.loads(r.read_text()) for r in args.results], [r.name for r in args.results]
        merged = merge(results, names, args.replace, args.add_seeds)
        dropped = [{tuple(k) for k in run["replaced"]} for run in merged["merged_from"]]  # what merge left out
        repeated = [{tuple(k) for k in run.get("repeated", [])} for run in merged["merged_from"]]
        blob = merge_predictions(args.predictions, dropped, kind_of(results[0]["sweep"]).cell_keys, repeated)
    except (OSError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_bytes_atomic(dest, blob)
    write_json_atomic(args.out, merged)
    print(f"{args.out}: {len(merged['cells'])} cells from {len(args.results)} runs; predictions in {dest}")
    return 0
