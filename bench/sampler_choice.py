"""Which Optuna sampler finds a near-best learning rate and weight decay at the budgets the sweeps ship?

    python -m bench.sampler_choice [--replicates 300] [--json out.json]

A cheap objective with the shape of ours: the validation score over (log10 lr, log10 weight decay) in the
sweep files' box is a smooth bump (its peak drawn anew per replicate, anywhere in the box; weight decay
matters less than the learning rate), each trial sees it through a learning curve with noise, and ASHA stops a
trial at the grace period (3 epochs, reduction factor 3) when it is not in the top third of the trials that
reached that rung before it; a stopped trial reports its last value, as Ray's OptunaSearch tells the study.
The group's choice is the trial with the best reported value. Success: the chosen setting's true score is
within a margin (MARGINS) of the box's best. Budgets: 3, 4, 8 and 10 samples per group (the demo, cpu and paper
scales). Samplers: TPE with 2 or 3 random start-up trials (multivariate), TPE with Optuna's default 10
start-up trials (random at every budget here: what the sweeps ran before), Sobol (QMC, scrambled) and random.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import optuna

LR, WD = (-5.0, -2.0), (-6.0, -2.0)  # log10 boxes of sweeps/fewshot.yaml's search
MARGINS = (0.01, 0.02)  # "near-best": within this of the best score in the box (the bump is 0.25 high)
NOISE = 0.01  # seed-to-seed noise of a validation score
EPOCHS, GRACE, RF = 15, 3, 3
BUDGETS = (3, 4, 8, 10)


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


def run_group(sampler: optuna.samplers.BaseSampler, true: Callable[[float, float], float], budget: int,
              rng: np.random.Generator) -> float:
    """One group's search; returns the true score of the setting it chooses."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    rung: list[float] = []
    chosen, best_seen = None, -np.inf
    for _ in range(budget):
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(*LR),
                           "wd": optuna.distributions.FloatDistribution(*WD)})
        f = true(trial.params["lr"], trial.params["wd"])
        curve = f * (1 - np.exp(-np.arange(1, EPOCHS + 1) / 3.0)) + rng.normal(0, NOISE, EPOCHS)
        at_grace = curve[GRACE - 1]
        stop = len(rung) >= RF - 1 and at_grace < np.quantile(rung, 1 - 1 / RF)
        rung.append(at_grace)
        reported = float(curve[:GRACE].max() if stop else curve.max())  # best so far, as the sweeps report
        study.tell(trial, reported)
        if reported > best_seen:
            best_seen, chosen = reported, f
    return chosen


def main(argv: list[str] | None = None) -> int:
    """Print the table (samples per group x sampler: chance of a near-best setting) and optionally a JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicates", type=int, default=300)
    p.add_argument("--json")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    names = list(samplers(0))
    hits = {(m, b): {n: 0 for n in names} for m in MARGINS for b in BUDGETS}
    for r in range(args.replicates):
        true = objective(np.random.default_rng([r, 0]))
        top = best_in_box(true)
        for budget in BUDGETS:
            for name, sampler in samplers(r).items():
                chosen = run_group(sampler, true, budget, np.random.default_rng([r, budget, 1]))
                for m in MARGINS:
                    hits[m, budget][name] += chosen >= top - m
    rate = {k: {n: v / args.replicates for n, v in h.items()} for k, h in hits.items()}
    print(f"chance that the chosen setting is within the margin of the best ({args.replicates} replicates, "
          f"± 95 % normal interval; {time.perf_counter() - t0:.0f} s)\n")
    print("| margin | samples per group | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 2) + "|")
    for (m, b), row in rate.items():
        cells = (f"{v:.2f} ± {1.96 * np.sqrt(v * (1 - v) / args.replicates):.2f}" for v in row.values())
        print(f"| {m} | {b} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"replicates": args.replicates, "noise": NOISE,
                       "rate": [{"margin": m, "samples": b, **row} for (m, b), row in rate.items()]}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
