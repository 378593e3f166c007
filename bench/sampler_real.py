"""The sampler comparison of bench/sampler_choice.py on a real objective: fine-tuning at the demo scale.

    python -m bench.sampler_real measure --out surface.json [--groups scratch@N70 scratch@N300] [--repeats 3]
    python -m bench.sampler_real replay surface.json [--replicates 300] [--json out.json]

Repeating real searches hundreds of times is unaffordable, so `measure` trains every point of a grid over
the sweep file's search box (log10 lr x log10 weight decay) a few times (seeds 0, 1, ...) for a few of its
groups, in this process, through the code a search trial runs (SweepSpec.finetune_config, then
ssrl.train.finetune with the search's epochs), and keeps each run's validation score at every epoch (what
the sweep reports to ASHA) and its test metric. The file is rewritten atomically after every run; a second
`measure` with the same settings skips the runs it holds.

`replay` then runs each sampler's searches on that surface: a suggested (lr, wd), continuous in the box, is
snapped to the nearest grid point in log space, and the trial reports one of that point's recorded curves,
drawn at random (the seed noise); ASHA (the sweep's grace period and reduction factor) and the group's choice
are bench.sampler_choice.search_group's. Success: the chosen point's mean best validation score (over its
repeats) is within the margin of the best point's.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from bench.sampler_choice import BUDGETS, Asha, bits, paired_table, samplers, search_group
from ssrl.atomic import atomic_open

FORMAT = 1
MARGINS = (0.01, 0.02)
_NOT_RECORDED = ("data_root", "cache_dir", "lr", "weight_decay", "seed")  # paths, and what varies per run


def fail(message: str) -> SystemExit:
    """A one-line error for the command line."""
    return SystemExit(f"bench.sampler_real: {message}")


# --- measure -----------------------------------------------------------------------------------------------


def grid(lo: float, hi: float, points: int) -> list[float]:
    """`points` evenly spaced values from lo to hi (log10), rounded so that they read back exactly."""
    return [round(float(v), 6) for v in np.linspace(lo, hi, points)]


def machine() -> dict[str, Any]:
    """What the surface was measured on."""
    import torch

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    cpu = names[0] if names else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "avx512": " avx512f" in info, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version()}


def settings(sweep: str, scale: str, groups: Sequence[str], lr_points: int, wd_points: int,
             repeats: int) -> tuple[Any, dict[str, Any]]:
    """The sweep at its scale, and what a surface of it is measured with (a resumed file must match this)."""
    from ssrl.tune.spec import load_sweep

    spec = load_sweep(sweep, scale)
    s = spec.search
    known = [c.group for c in spec.searched_cells]
    unknown = [g for g in groups if g not in known]
    if unknown or not groups:
        raise fail(f"--groups {' '.join(unknown) or '(none)'}: not a searched group of {sweep} at {scale}; "
                   f"use some of {', '.join(known)}")
    if min(lr_points, wd_points, repeats) < 1:
        raise fail("--lr-points, --wd-points and --repeats must be at least 1")
    box = {"lr": [float(np.log10(v)) for v in s.lr], "weight_decay": [float(np.log10(v)) for v in s.weight_decay]}
    return spec, {
        "sweep": sweep, "scale": scale, "groups": list(groups), "metric": "val_score", "test_metric": spec.metric,
        "box_log10": box, "grid_log10": {"lr": grid(*box["lr"], lr_points),
                                         "weight_decay": grid(*box["weight_decay"], wd_points)},
        "seeds": list(range(s.seed, s.seed + repeats)),
        "asha": {"grace_period": s.grace_period, "reduction_factor": s.reduction_factor, "max_t": s.epochs},
        "samples_per_group": s.samples_per_group,
        "train": {g: {k: v for k, v in dataclasses.asdict(spec.finetune_config(spec.cell(g))).items()
                      if k not in _NOT_RECORDED} for g in groups},  # epochs: the search's (= train's)
    }


def load_surface(path: Path) -> dict[str, Any]:
    """A surface file, checked for the keys replay reads."""
    if not path.exists():
        raise fail(f"{path}: no such surface file (write it with `python -m bench.sampler_real measure --out`)")
    try:
        surface = json.loads(path.read_text())
        if surface.get("format") != FORMAT or not {"settings", "runs"} <= set(surface):
            raise ValueError(f"format {surface.get('format')!r}, keys {sorted(surface)}")
    except (ValueError, AttributeError) as e:
        raise fail(f"{path}: not a surface file of this version ({e})") from None
    return surface


def _write(path: Path, surface: dict[str, Any]) -> None:
    with atomic_open(path, "w") as f:
        json.dump(surface, f, indent=1)


def measure(out: Path, sweep: str = "fewshot", scale: str = "demo",
            groups: Sequence[str] = ("scratch@N70", "scratch@N300"),
            lr_points: int = 7, wd_points: int = 4, repeats: int = 3, data_root: str | None = None,
            say: Callable[[str], None] = print) -> dict[str, Any]:
    """Train every (seed, group, lr, wd) of the grid not yet in `out`, writing `out` after each; returns it."""
    from ssrl.data import open_ptbxl
    from ssrl.train import finetune
    from ssrl.tune.dataset import synthetic_root

    spec, wanted = settings(sweep, scale, groups, lr_points, wd_points, repeats)
    if out.exists():  # resume: the same settings; more repeats (seeds) may be added
        surface = load_surface(out)
        diff = sorted(k for k in wanted if k != "seeds" and surface["settings"].get(k) != wanted[k])
        if diff:
            raise fail(f"{out} was measured with other settings ({', '.join(diff)}); use another --out")
        surface["settings"]["seeds"] = sorted(set(surface["settings"]["seeds"]) | set(wanted["seeds"]))
    else:
        surface = {"format": FORMAT, "settings": wanted, "runs": []}
    root = Path(data_root) if data_root else synthetic_root(spec.data_records)
    data = open_ptbxl(root, 100)
    source = {"name": data.name, "records": int(len(data.signals)),
              "built_in": None if data_root else f"synthetic PTB-XL, {spec.data_records} records"}
    if surface.get("data", source) != source:
        raise fail(f"{out} was measured on other data ({surface['data']}); use another --out")
    surface.update(data=source, machine=surface.get("machine") or machine())
    done = {(r["group"], r["lr"], r["weight_decay"], r["seed"]) for r in surface["runs"]}
    todo = [(g, lr, wd, seed) for seed in wanted["seeds"] for g in groups  # every point once before any repeat
            for lr in wanted["grid_log10"]["lr"] for wd in wanted["grid_log10"]["weight_decay"]]
    todo = [k for k in todo if k not in done]
    say(f"{out}: {len(done)} runs held, {len(todo)} to train")
    for i, (group, lr, wd, seed) in enumerate(todo):
        cfg = spec.finetune_config(spec.cell(group), data_root=str(root), seed=seed, epochs=spec.search.epochs,
                                   lr=10.0 ** lr, weight_decay=10.0 ** wd)
        rows: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        final = finetune(cfg, rows.append)
        seconds = time.perf_counter() - t0
        surface["runs"].append({
            "group": group, "lr": lr, "weight_decay": wd, "seed": seed,
            "val": [round(float(r["val_score"]), 6) for r in rows if not r.get("done")],
            "test": round(float(final[spec.metric]), 6), "best_epoch": int(final["best_epoch"]),
            "precision": final["precision"], "seconds": round(seconds, 2)})
        surface["precision"] = sorted({r["precision"] for r in surface["runs"]})
        surface["measured"] = datetime.date.today().isoformat()
        _write(out, surface)
        say(f"[{i + 1}/{len(todo)}] {group} lr 1e{lr:+.2f} wd 1e{wd:+.2f} seed {seed}: best val "
            f"{max(surface['runs'][-1]['val']):.3f}, {seconds:.0f} s")
    return surface


# --- replay ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Surface:
    """One group's measured grid: curves[i][j] holds the validation curves of (lr_grid[i], wd_grid[j])."""

    lr_grid: np.ndarray
    wd_grid: np.ndarray
    curves: list[list[list[np.ndarray]]]

    @property
    def mean_best(self) -> np.ndarray:
        """(n_lr, n_wd): each point's best validation score, averaged over its repeats."""
        return np.array([[np.mean([c.max() for c in cell]) for cell in row] for row in self.curves])

    def snap(self, lr: float, wd: float) -> tuple[int, int]:
        """The grid point nearest (lr, wd), both log10: the nearest value on each axis of the product grid."""
        return int(np.abs(self.lr_grid - lr).argmin()), int(np.abs(self.wd_grid - wd).argmin())

    def trials(self, rng: np.random.Generator) -> Callable[[float, float], tuple[np.ndarray, tuple[int, int]]]:
        """A trial at (lr, wd): the nearest grid point, and one of its recorded curves drawn with rng (seed noise)."""
        def trial(lr: float, wd: float) -> tuple[np.ndarray, tuple[int, int]]:
            i, j = self.snap(lr, wd)
            return self.curves[i][j][rng.integers(len(self.curves[i][j]))], (i, j)

        return trial


def group_surfaces(surface: Mapping[str, Any]) -> dict[str, Surface]:
    """Per group, its grid of curves; every grid point needs at least one run."""
    s = surface["settings"]
    lrs, wds = s["grid_log10"]["lr"], s["grid_log10"]["weight_decay"]
    out = {}
    for g in s["groups"]:
        curves: list[list[list[np.ndarray]]] = [[[] for _ in wds] for _ in lrs]
        for r in surface["runs"]:
            if r["group"] == g:
                curves[lrs.index(r["lr"])][wds.index(r["weight_decay"])].append(np.asarray(r["val"], float))
        if any(not cell for row in curves for cell in row):
            raise fail(f"group {g}: some grid points have no run yet; finish `measure` first")
        out[g] = Surface(np.asarray(lrs), np.asarray(wds), curves)
    return out


def outcomes(surface: Mapping[str, Any], replicates: int, margins: Sequence[float] = MARGINS,
             budgets: Sequence[int] = BUDGETS,
             candidates: Callable[[int], dict[str, optuna.samplers.BaseSampler]] = samplers,
             ) -> dict[tuple[str, float, int], dict[str, list[int]]]:
    """Per (group, margin, budget) and sampler, whether each of `replicates` searches succeeded (1) or not (0).

    Search r of a group draws the same seed noise for every sampler, so the lists pair up search by search."""
    s = surface["settings"]
    asha = Asha(**s["asha"])
    box = (tuple(s["box_log10"]["lr"]), tuple(s["box_log10"]["weight_decay"]))
    hits: dict[tuple[str, float, int], dict[str, list[int]]] = {}
    for gi, (group, surf) in enumerate(group_surfaces(surface).items()):
        quality = surf.mean_best
        for budget in budgets:
            for r in range(replicates):
                seed = int(np.random.SeedSequence([r, gi]).generate_state(1)[0])
                for name, sampler in candidates(seed).items():
                    rng = np.random.default_rng([r, gi, budget])  # the same seed draws for every sampler
                    chosen = search_group(sampler, budget, surf.trials(rng), asha, box)
                    for m in margins:
                        row = hits.setdefault((group, m, budget), {})
                        row.setdefault(name, []).append(int(quality[chosen] >= quality.max() - m))
    return hits


def replay(surface: Mapping[str, Any], replicates: int, margins: Sequence[float] = MARGINS,
           budgets: Sequence[int] = BUDGETS,
           candidates: Callable[[int], dict[str, optuna.samplers.BaseSampler]] = samplers,
           ) -> dict[tuple[str, float, int], dict[str, float]]:
    """Chance of success per (group, margin, budget) and sampler, over `replicates` searches each."""
    hits = outcomes(surface, replicates, margins, budgets, candidates)
    return {k: {n: float(np.mean(v)) for n, v in row.items()} for k, row in hits.items()}


def table(rate: Mapping[tuple[float, int], Mapping[str, float]], n: int) -> str:
    """Markdown: margin x budget rows, a sampler per column, chance ± 95 % normal interval over n searches."""
    names = list(next(iter(rate.values())))
    lines = ["| margin | samples per group | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for (m, b), row in sorted(rate.items()):
        cells = (f"{v:.2f} ± {1.96 * np.sqrt(v * (1 - v) / n):.2f}" for v in row.values())
        lines.append(f"| {m} | {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(surface: Mapping[str, Any]) -> str:
    """Per group, the grid's mean best validation score (rows lr, columns wd, log10) and its seed spread."""
    out = []
    for g, surf in group_surfaces(surface).items():
        q = surf.mean_best
        sd = [np.std([c.max() for c in cell], ddof=1) for row in surf.curves for cell in row if len(cell) > 1]
        top = np.sort(q.ravel())[::-1]
        out.append(f"{g}: best {top[0]:.3f}, second {top[1]:.3f}, median {np.median(q):.3f}; seed sd of a point's "
                   f"best validation score: median {np.median(sd) if sd else float('nan'):.3f}\n")
        out.append("| log10 lr \\ log10 wd | " + " | ".join(f"{w:g}" for w in surf.wd_grid) + " |")
        out.append("|---" * (len(surf.wd_grid) + 1) + "|")
        out += [f"| {lr:g} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for lr, row in zip(surf.lr_grid, q)]
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """measure a surface, or replay the samplers' searches on one and print the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="train the grid and write the surface JSON (resumable)")
    m.add_argument("--out", required=True, type=Path)
    m.add_argument("--sweep", default="fewshot")
    m.add_argument("--scale", default="demo")
    m.add_argument("--groups", nargs="+", default=["scratch@N70", "scratch@N300"])
    m.add_argument("--lr-points", type=int, default=7)
    m.add_argument("--wd-points", type=int, default=4)
    m.add_argument("--repeats", type=int, default=3)
    m.add_argument("--data-root", help="a PTB-XL tree; default: the built-in synthetic one at the scale's size")
    m.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    r = sub.add_parser("replay", help="replay every sampler's searches on a measured surface")
    r.add_argument("surface", type=Path)
    r.add_argument("--replicates", type=int, default=300)
    r.add_argument("--margins", type=float, nargs="+", default=list(MARGINS),
                   help="near-best: within this of the best point's mean best validation score")
    r.add_argument("--json")
    args = p.parse_args(argv)
    if args.command == "measure":
        import torch

        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        measure(args.out, args.sweep, args.scale, args.groups, args.lr_points, args.wd_points, args.repeats,
                args.data_root, say=lambda line: print(line, flush=True))
        print(f"done in {time.perf_counter() - t0:.0f} s")
        return 0
    if args.replicates < 1:
        raise fail(f"--replicates {args.replicates}: need at least 1")
    bad = [m for m in args.margins if not 0 < m < 1]
    if bad:
        raise fail(f"--margins {' '.join(map(str, bad))}: a margin is a share of the validation score, in (0, 1)")
    surface = load_surface(args.surface)
    t0 = time.perf_counter()
    hits = outcomes(surface, args.replicates, args.margins)
    rate = {k: {n: float(np.mean(v)) for n, v in row.items()} for k, row in hits.items()}
    groups = surface["settings"]["groups"]
    pooled = {(m, b): {n: float(np.mean([rate[g, m, b][n] for g in groups])) for n in rate[groups[0], m, b]}
              for (_, m, b) in rate}
    both = {(m, b): {n: [o for g in groups for o in hits[g, m, b][n]] for n in hits[groups[0], m, b]}
            for (_, m, b) in hits}
    n_runs = len(surface["runs"])
    print(f"{args.surface}: {len(groups)} groups, {n_runs} runs; chance that the chosen grid point is within the "
          f"margin of the best ({args.replicates} searches per group and budget, ± 95 % normal interval; "
          f"{time.perf_counter() - t0:.0f} s)\n")
    print(describe(surface))
    print(f"all groups ({len(groups)} x {args.replicates} searches per cell)\n")
    print(table(pooled, len(groups) * args.replicates) + "\n")
    print(f"paired: the same {len(groups)} x {args.replicates} searches for every sampler\n\n{paired_table(both)}\n")
    for g in groups:
        print(f"{g}\n\n" + table({(m, b): v for (gg, m, b), v in rate.items() if gg == g}, args.replicates) + "\n")
    if args.json:
        with atomic_open(args.json, "w") as f:
            json.dump({"surface": str(args.surface), "replicates": args.replicates,
                       "rate": [{"group": g, "margin": m, "samples": b, **row} for (g, m, b), row in rate.items()]
                       + [{"group": "all", "margin": m, "samples": b, **row} for (m, b), row in pooled.items()],
                       "outcomes": [{"group": g, "margin": m, "samples": b, **{n: bits(v) for n, v in row.items()}}
                                    for (g, m, b), row in hits.items()]},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
