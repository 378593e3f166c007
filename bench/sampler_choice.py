"""Which Optuna sampler finds a near-best learning rate and weight decay at the budgets the sweeps ship?

    python -m bench.sampler_choice [--replicates 300] [--json out.json]

A cheap objective with the shape of ours: the validation score over (log10 lr, log10 weight decay) in the
sweep files' box is a smooth bump (its peak drawn anew per replicate, anywhere in the box; weight decay
matters less than the learning rate), each trial sees it through a learning curve with noise, and ASHA (grace
period 3 epochs, reduction factor 3 over 15 epochs: rungs at 3 and 9) stops a trial at a rung when its value
there is below the top third of the values that reached the rung before it (Ray's rule, `Asha`); the study is
told the trial's best reported value, as GroupedOptunaSearch tells it. The group's choice is the trial with
the best reported value (`search_group`, which bench/sampler_real.py replays real trials through). Success:
the chosen setting's true score is within a margin (MARGINS) of the box's best. Budgets: 3, 4, 8 and 10
samples per group (the demo, cpu and paper scales). Samplers: TPE with 2 or 3 random start-up trials
(multivariate), TPE with Optuna's default 10 start-up trials (random at every budget here: what the sweeps ran
before), Sobol (QMC, scrambled) and random.

Every sampler searches the same replicates (the same bump, the same noise draws in trial order), so the
comparison with the shipped sampler is paired (`paired_table`): the difference in chance, and McNemar's exact
test on the replicates where one sampler succeeds and the other does not, Holm-adjusted over the table.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import optuna
from scipy.stats import binomtest

from ssrl.atomic import atomic_open
from ssrl.report.stats import holm

LR, WD = (-5.0, -2.0), (-6.0, -2.0)  # log10 boxes of sweeps/fewshot.yaml's search
MARGINS = (0.01, 0.02)  # "near-best": within this of the best score in the box (the bump is 0.25 high)
NOISE = 0.01  # seed-to-seed noise of a validation score
EPOCHS, GRACE, RF = 15, 3, 3
BUDGETS = (3, 4, 8, 10)
SHIPPED = "tpe-3-mv"  # what ssrl.tune.search.sampler_for builds; the paired tables compare the rest with it


def samplers(seed: int) -> dict[str, optuna.samplers.BaseSampler]:
    """The candidates, seeded."""
    return {
        "tpe-2-mv": optuna.samplers.TPESampler(n_startup_trials=2, multivariate=True, seed=seed),
        "tpe-3-mv": optuna.samplers.TPESampler(n_startup_trials=3, multivariate=True, seed=seed),
        "tpe-default-10": optuna.samplers.TPESampler(seed=seed),
        "sobol": optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed),
        "random": optuna.samplers.RandomSampler(seed=seed),
    }


def objective(rng: np.random.Generator) -> Callable[[float, float], float]:
    """A replicate's true score over (log10 lr, log10 wd): a bump of height 0.25 on a floor of 0.55."""
    peak = (rng.uniform(*LR), rng.uniform(*WD))
    width = (rng.uniform(0.4, 0.9), rng.uniform(1.5, 3.0))  # decades: lr narrow, wd broad
    return lambda lr, wd: 0.55 + 0.25 * float(np.exp(-0.5 * (((lr - peak[0]) / width[0]) ** 2
                                                            + ((wd - peak[1]) / width[1]) ** 2)))


def best_in_box(true: Callable[[float, float], float]) -> float:
    """The box's best true score, on a fine grid."""
    return max(true(lr, wd) for lr in np.linspace(*LR, 121) for wd in np.linspace(*WD, 41))


@dataclass(frozen=True)
class Asha:
    """Ray's ASHA with one bracket, as GroupedASHA runs it per group (time in epochs)."""

    grace_period: int
    reduction_factor: int
    max_t: int

    @property
    def rungs(self) -> list[int]:
        """The epochs a trial can be stopped at: grace * rf**k, as Ray builds them (a rung at max_t stops nothing:
        every trial ends there anyway)."""
        n = int(np.log(self.max_t / self.grace_period) / np.log(self.reduction_factor) + 1)  # Ray's MAX_RUNGS
        return [m for m in (self.grace_period * self.reduction_factor ** k for k in range(n)) if m < self.max_t]

    def epochs_run(self, curve: np.ndarray, recorded: dict[int, list[float]]) -> int:
        """How many epochs of `curve` (a trial's validation value per epoch) ASHA lets it run; records the values
        it reaches each rung with. Ray's rule: stopped at a rung when its value there is below the (1 - 1/rf)
        quantile of the values recorded at that rung before it (from the first one on)."""
        for m in self.rungs:
            if len(curve) < m:  # the trial ended before this rung (patience)
                break
            before = recorded.setdefault(m, [])
            stop = bool(before) and curve[m - 1] < np.nanpercentile(before, (1 - 1 / self.reduction_factor) * 100)
            before.append(float(curve[m - 1]))
            if stop:
                return m
        return len(curve)


T = TypeVar("T")


def search_group(sampler: optuna.samplers.BaseSampler, budget: int,
                 trial: Callable[[float, float], tuple[np.ndarray, T]], asha: Asha,
                 box: tuple[tuple[float, float], tuple[float, float]] = (LR, WD)) -> T:
    """One group's search, its trials one after another: the sampler asks (log10 lr, log10 wd) in `box`,
    `trial` gives the validation curve the trial would report (one value per epoch) and what to remember of it,
    ASHA may stop it at a rung, Optuna is told the best value it reported (as GroupedOptunaSearch does) and the
    group chooses the trial with the best reported value (the first of equals, as best_per_group). Returns what
    `trial` gave for the chosen trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    space = {"lr": optuna.distributions.FloatDistribution(*box[0]),
             "wd": optuna.distributions.FloatDistribution(*box[1])}
    recorded: dict[int, list[float]] = {}
    chosen, best_seen = None, -np.inf
    for _ in range(budget):
        t = study.ask(space)
        curve, what = trial(t.params["lr"], t.params["wd"])
        reported = float(np.max(curve[:asha.epochs_run(curve, recorded)]))  # best so far, as the sweeps report
        study.tell(t, reported)
        if reported > best_seen:
            best_seen, chosen = reported, what
    return chosen


def run_group(sampler: optuna.samplers.BaseSampler, true: Callable[[float, float], float], budget: int,
              rng: np.random.Generator) -> float:
    """One group's search on the bump; returns the true score of the setting it chooses."""
    def trial(lr: float, wd: float) -> tuple[np.ndarray, float]:
        f = true(lr, wd)
        return f * (1 - np.exp(-np.arange(1, EPOCHS + 1) / 3.0)) + rng.normal(0, NOISE, EPOCHS), f

    return search_group(sampler, budget, trial, Asha(GRACE, RF, EPOCHS))


def paired(a: Sequence[int], b: Sequence[int]) -> tuple[float, int, int, float]:
    """a's chance of success minus b's over the same searches, the searches only a / only b got right, McNemar's exact p."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or not a.size:
        raise ValueError("paired outcomes need the same searches, at least one")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return (only_a - only_b) / a.size, only_a, only_b, float(p)


def bits(outcomes: Sequence[int]) -> str:
    """Per-search successes as a string of 0s and 1s, search by search (compact in a JSON)."""
    return "".join("1" if o else "0" for o in outcomes)


def paired_table(outcomes: Mapping[tuple[float, int], Mapping[str, Sequence[int]]], against: str = SHIPPED) -> str:
    """Markdown: margin x budget rows, a column per other sampler: `against` minus it, (only against : only it),
    McNemar's exact p Holm-adjusted over every cell of the table (the family), * where that is under 0.05."""
    others = [n for n in next(iter(outcomes.values())) if n != against]
    cells = {(k, n): paired(row[against], row[n]) for k, row in outcomes.items() for n in others}
    adjusted = dict(zip(cells, holm([c[3] for c in cells.values()])))
    lines = ["| margin | samples per group | " + " | ".join(f"{against} − {n}" for n in others) + " |",
             "|---" * (len(others) + 2) + "|"]
    for m, b in sorted(outcomes):
        out = []
        for n in others:
            d, only_a, only_b, _ = cells[(m, b), n]
            q = adjusted[(m, b), n]
            out.append(f"{d:+.2f} ({only_a}:{only_b}) p={q:.2g}{'*' if q < 0.05 else ''}")
        lines.append(f"| {m} | {b} | " + " | ".join(out) + " |")
    n_family = len(cells)
    return "\n".join(lines) + (f"\n\n(a:b) searches only {against} / only the other got right; p: McNemar's exact "
                               f"test, Holm-adjusted over the {n_family} cells; * under 0.05")


def main(argv: list[str] | None = None) -> int:
    """Print the table (samples per group x sampler: chance of a near-best setting), the paired table, optionally a JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicates", type=int, default=300)
    p.add_argument("--json")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    names = list(samplers(0))
    hits: dict[tuple[float, int], dict[str, list[int]]] = {(m, b): {n: [] for n in names}
                                                           for m in MARGINS for b in BUDGETS}
    for r in range(args.replicates):
        true = objective(np.random.default_rng([r, 0]))
        top = best_in_box(true)
        for budget in BUDGETS:
            for name, sampler in samplers(r).items():
                chosen = run_group(sampler, true, budget, np.random.default_rng([r, budget, 1]))
                for m in MARGINS:
                    hits[m, budget][name].append(int(chosen >= top - m))
    rate = {k: {n: float(np.mean(v)) for n, v in h.items()} for k, h in hits.items()}
    print(f"chance that the chosen setting is within the margin of the best ({args.replicates} replicates, "
          f"± 95 % normal interval; {time.perf_counter() - t0:.0f} s)\n")
    print("| margin | samples per group | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 2) + "|")
    for (m, b), row in rate.items():
        cells = (f"{v:.2f} ± {1.96 * np.sqrt(v * (1 - v) / args.replicates):.2f}" for v in row.values())
        print(f"| {m} | {b} | " + " | ".join(cells) + " |")
    print(f"\npaired, the same {args.replicates} replicates for every sampler\n\n" + paired_table(hits))
    if args.json:
        with atomic_open(args.json, "w") as f:
            json.dump({"replicates": args.replicates, "noise": NOISE,
                       "rate": [{"margin": m, "samples": b, **row} for (m, b), row in rate.items()],
                       "outcomes": [{"margin": m, "samples": b, **{n: bits(v) for n, v in row.items()}}
                                    for (m, b), row in hits.items()]}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
