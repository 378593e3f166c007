"""CLI: `python -m ssrl.data {describe,subsets,cache,synth} ...`; a DataError exits 2 with one line on stderr."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ssrl.data.ptbxl import DataError, describe, read_ptbxl, task_labels
from ssrl.data.samplers import fraction_subset

FRACTIONS = (0.01, 0.05, 0.10, 0.25, 1.00)
SEEDS = (42, 52, 62)


def _table(header: list[str], rows: list[list[object]]) -> str:
    """Plain right-aligned text table."""
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells)


def cmd_describe(args: argparse.Namespace) -> dict:
    """Record and class counts per task and split, from the CSVs and the record listing only."""
    out = describe(read_ptbxl(args.root, args.sampling_rate))
    if not args.json:
        print(f"{out['root']}: {out['n_records']} records at {out['sampling_rate']} Hz, "
              f"pretraining pool (folds 1-8) {out['pretrain_pool']}")
        for task, info in out["tasks"].items():
            rows = [[split, s["n"], *s["per_class"].values()] for split, s in info["splits"].items()]
            print(f"\n{task}\n" + _table(["split", "n", *info["classes"]], rows))
    return out


def subset_sizes(root: Path, sampling_rate: int, fractions: tuple[float, ...], seeds: tuple[int, ...]) -> dict:
    """Per-class sizes of the stratified label subsets of the superdiagnostic train pool."""
    task = "superdiagnostic"
    train = task_labels(read_ptbxl(root, sampling_rate), task).split("train")
    rows = [{"fraction": f, "seed": s, "n": len(part), "per_class": part.per_class()}
            for f in fractions for s in seeds for part in [train.take(fraction_subset(train.y, f, s))]]
    return {"root": str(root), "task": task, "pool": {"n": len(train), "per_class": train.per_class()},
            "subsets": rows}


def cmd_subsets(args: argparse.Namespace) -> dict:
    """Superdiagnostic subset sizes per class for every (fraction, seed)."""
    out = subset_sizes(args.root, args.sampling_rate, tuple(args.fractions), tuple(args.seeds))
    if not args.json:
        classes = list(out["pool"]["per_class"])
        rows = [["pool", "-", out["pool"]["n"], *out["pool"]["per_class"].values()]]
        rows += [[f"{r['fraction']:.0%}", r["seed"], r["n"], *r["per_class"].values()] for r in out["subsets"]]
        print(f"{out['task']} train pool of {out['root']}\n" + _table(["fraction", "seed", "n", *classes], rows))
    return out


def cmd_cache(args: argparse.Namespace) -> dict:
    """Build (first use) or load the signal cache and report the time it took."""
    from ssrl.data.cache import open_ptbxl

    t0 = time.perf_counter()
    data = open_ptbxl(args.root, args.sampling_rate, args.cache_dir, args.workers)
    out = {"root": str(data.root), "cache": str(data.cache_path), "shape": list(data.signals.shape),
           "seconds": round(time.perf_counter() - t0, 3), "mean": data.mean.round(5).tolist(),
           "std": data.std.round(5).tolist()}
    if not args.json:
        print(f"{out['cache']}: {tuple(out['shape'])} float16, opened in {out['seconds']} s")
    return out


def cmd_synth(args: argparse.Namespace) -> dict:
    """Write a synthetic PTB-XL tree."""
    from ssrl.data.synth import write_synthetic  # lazy: only this command needs it

    dest = write_synthetic(args.dir, n_records=args.records, seed=args.seed,
                           sampling_rates=tuple(args.sampling_rates))
    out = {"root": str(dest), "n_records": args.records, "seed": args.seed}
    if not args.json:
        print(f"{dest}: {args.records} synthetic records (seed {args.seed})")
    return out


def parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(prog="python -m ssrl.data", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn, help_: str, root: bool = True) -> argparse.ArgumentParser:
        """One subcommand with the shared ROOT / --sampling-rate / --json arguments."""
        q = sub.add_parser(name, help=help_)
        if root:
            q.add_argument("root", type=Path, help="PTB-XL root (holds ptbxl_database.csv)")
            q.add_argument("--sampling-rate", type=int, default=100, choices=(100, 500))
        q.add_argument("--json", action="store_true", help="print JSON instead of a table")
        q.set_defaults(fn=fn)
        return q

    add("describe", cmd_describe, "record and class counts per task and split")
    q = add("subsets", cmd_subsets, "per-class sizes of the superdiagnostic label subsets")
    q.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    q.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    q = add("cache", cmd_cache, "build or load the per-node signal cache")
    q.add_argument("--cache-dir", type=Path, default=None, help="default $SSRL_CACHE_DIR or ~/.cache/ssrl")
    q.add_argument("--workers", type=int, default=None, help="processes for the build (default: by size)")
    q = add("synth", cmd_synth, "write a synthetic PTB-XL tree", root=False)
    q.add_argument("dir", type=Path)
    q.add_argument("--records", type=int, default=2000)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--sampling-rates", type=int, nargs="+", default=[100], choices=(100, 500))
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; DataError becomes one line on stderr and exit code 2."""
    args = parser().parse_args(argv)
    try:
        out = args.fn(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
