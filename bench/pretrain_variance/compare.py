"""How much of a cell's spread is pretraining? One encoder per seed against one encoder for all seeds.

    python -m bench.pretrain_variance.compare PER_SEED.json SHARED.json

PER_SEED.json: a few-shot run whose seed s fine-tuned encoder s (`pretraining.per_seed: true`, this folder's
sweep files); SHARED.json: the same conditions, every seed fine-tuning one encoder (`shared/`). Both runs
use the same seeds, so the labelled subsets and the fine-tuning seeds are the same: only the encoder differs,
and seed 42 (the shared encoder's own seed) must give the same score in both runs.

For every encoder-dependent cell in both files, printed as markdown: the mean and sample std over seeds in
each design, the ratio of the stds, the per-seed difference per-seed minus shared (mean, 95 % t interval,
paired t-test p) and, where the per-seed file has the comparison cells, each design's paired contrast
against `scratch` and against `hrv_logreg` (the shared run has neither, so it is paired with the per-seed
file's cells, which share its subsets and seeds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ssrl.report.stats import paired_cells, summarize

KEYS = ("track", "method", "n_labelled", "bn_stats")


def _key(cell: dict) -> tuple:
    return tuple(cell.get(k) for k in KEYS)


def _scores(cell: dict, metric: str) -> dict[int, float]:
    return {r["seed"]: float(r[metric]) for r in cell.get("per_seed", []) if r.get(metric) is not None}


def _fmt(d: dict[str, Any]) -> str:
    if d.get("mean_diff") is None or d.get("ci95") is None:
        return "—"
    lo, hi = d["ci95"]
    p = d.get("p_value")
    return f"{d['mean_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}]" + (f" p={p:.3g}" if p is not None else "")


def _label(cell: dict) -> str:
    return f"{cell['track']}" + (f"[{cell['method']}]" if cell.get("method") else "") + f" N={cell.get('n_labelled')}"


def compare(per_seed: dict, shared: dict) -> list[str]:
    """The markdown lines of the comparison (see the module docstring)."""
    metric = per_seed["metric"]
    if shared["metric"] != metric:
        raise SystemExit(f"the files score different metrics: {metric} and {shared['metric']}")
    if not (per_seed.get("pretraining") or {}).get("per_seed"):
        raise SystemExit("the first file did not fine-tune one encoder per seed (pretraining.per_seed is not true)")
    if (shared.get("pretraining") or {}).get("per_seed"):
        raise SystemExit("the second file fine-tuned one encoder per seed; it should share one")
    mine = {_key(c): c for c in per_seed["cells"]}
    by_track = {(c["track"], c.get("n_labelled")): c for c in per_seed["cells"] if not c.get("method")}
    lines = [f"metric {metric}; per-seed encoders: seeds {per_seed['pretraining']['seeds']}; "
             f"shared: seed {shared['pretraining']['seeds']}'s encoder for every seed", "",
             "| cell | per-seed mean ± std | shared mean ± std | std ratio | per-seed − shared | "
             "Δ scratch: per-seed | Δ scratch: shared | Δ hrv_logreg: per-seed | Δ hrv_logreg: shared |",
             "|---|---|---|---|---|---|---|---|---|"]
    (anchor,) = shared["pretraining"]["seeds"]
    same, cells = 0, 0
    for cell in shared["cells"]:
        own = mine.get(_key(cell))
        if own is None:
            continue
        a, b = _scores(own, metric), _scores(cell, metric)
        cells += 1
        same += anchor in a and anchor in b and a[anchor] == b[anchor]
        sa, sb = summarize(list(a.values())), summarize(list(b.values()))
        ratio = f"{sa['std'] / sb['std']:.2f}" if sa["std"] and sb["std"] else "—"
        row = [_label(cell), f"{sa['mean']:.4f} ± {sa['std']:.4f}", f"{sb['mean']:.4f} ± {sb['std']:.4f}", ratio,
               _fmt(paired_cells(own, cell, metric))]
        for base_track in ("scratch", "hrv_logreg"):
            base = by_track.get((base_track, cell.get("n_labelled")))
            row += ([_fmt(paired_cells(own, base, metric)), _fmt(paired_cells(cell, base, metric))]
                    if base else ["—", "—"])
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"seed {anchor} (the shared encoder's own seed, so the same encoder, subset and fine-tuning in "
              f"both runs) scores the same in both runs in {same} of {cells} cells"]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("per_seed", type=Path, help="results.json of the run with one encoder per seed")
    p.add_argument("shared", type=Path, help="results.json of the run with one encoder for all seeds")
    args = p.parse_args(argv)
    files = []
    for path in (args.per_seed, args.shared):
        try:
            files.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"{path}: cannot read a results file ({e}); give a sweep's results.json") from None
    print("\n".join(compare(*files)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
