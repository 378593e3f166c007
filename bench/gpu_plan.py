"""The scarcity workload bench.gpu runs, read from the sweep files, and what the whole paper sweep would take.

`paper` scale: SimCLR pretraining on the whole pool at sweeps/pretrain.yaml's budget, then every
(track, fraction, seed) of sweeps/scarcity.yaml at its epochs and patience with the fixed learning
rates (`train` + `track_train`). The Optuna/ASHA search the paper sweep runs before that is left
out (it needs Ray and Optuna) and estimated from the measured epoch times instead. `--tiny` takes
the sweep files' `smoke` scale.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ssrl.config import TRACKS, FinetuneConfig, PretrainConfig, from_dict
from ssrl.train import HANDED_ON
from ssrl.tune.spec import Search, SweepSpec, load_sweep

LEFT_OUT = ["search: the per-group Optuna/ASHA search (needs Ray and Optuna); estimated in paper_sweep",
            "MLflow logging and Ray scheduling overheads",
            "pretrain_methods after the first: their pretraining and SSL-track trials (each costs about what the "
            "first method's do)"]


@dataclass(frozen=True)
class Job:
    """One trial: its kind, a name, its flat config and, for SSL tracks, the pretraining it waits for."""

    kind: str  # "pretrain" | "finetune"
    name: str  # e.g. "pretrain/simclr/seed42" or "ssl_finetune[simclr]@0.1/seed52"
    config: dict
    group: str = ""
    needs: str = ""  # name of the job whose encoder it fine-tunes
    cost: float = 1.0  # relative run time, for longest-first ordering


@dataclass(frozen=True)
class Plan:
    """The pretraining and fine-tuning jobs of one scale, and the paper sweep's search settings."""

    scale: str
    pretrain: Job
    finetune: tuple[Job, ...]
    search: Search
    cells: int
    seeds: int
    left_out: list[str] = field(default_factory=lambda: list(LEFT_OUT))


def plan(scale: str, where: dict, work_dir: Path) -> Plan:
    """Jobs of the scarcity sweep at `scale`; `where` holds data_root, cache_dir, device and precision."""
    pspec, sspec = load_sweep("pretrain", scale), load_sweep("scarcity", scale)
    method = sspec.pretrain_methods[0]
    pre_cfg = {**pspec.train, **where, "method": method, "seed": pspec.seeds[0]}
    from_dict(PretrainConfig, pre_cfg)  # checked now, not in a worker
    pre = Job("pretrain", f"pretrain/{method}/seed{pspec.seeds[0]}", pre_cfg, cost=1e9)
    encoder = str(work_dir / pre.name / HANDED_ON)
    paper_search = load_sweep("scarcity", "paper").search  # what the estimate adds, whatever the scale run
    return Plan(scale, pre, tuple(_finetune_jobs(sspec, where, pre.name, encoder)), paper_search,
                sum(c.method in ("", method) for c in sspec.cells), len(sspec.seeds))


def _finetune_jobs(spec: SweepSpec, where: dict, pre_name: str, encoder: str) -> list[Job]:
    """Every cell x seed of the scarcity sweep as a Job, as ssrl.tune.stages.evaluate configures it."""
    jobs = []
    for cell in (c for c in spec.cells if c.method in ("", spec.pretrain_methods[0])):
        ssl = TRACKS[cell.track].init == "ssl"
        for seed in spec.seeds:
            cfg = {**spec.training(cell), **where, "seed": seed, "pretrained": encoder if ssl else ""}
            from_dict(FinetuneConfig, cfg)  # checked now, not in a worker
            cost = cfg["fraction"] * (0.1 if TRACKS[cell.track].frozen else 1.0)
            jobs.append(Job("finetune", f"{cell.group}/seed{seed}", cfg, cell.group, pre_name if ssl else "", cost))
    return jobs


def asha_epochs(n: int, grace: int, factor: int, max_t: int) -> float:
    """Expected epochs of n trials under successive halving: all reach `grace`, 1/factor of them each next rung."""
    total, rung, alive = 0.0, 0, float(n)
    nxt = min(grace, max_t)
    while rung < max_t:
        total += alive * (nxt - rung)
        rung, alive = nxt, alive / factor
        nxt = min(rung * factor, max_t)
    return total


def paper_sweep(plan: Plan, jobs: list[dict], measured_s: float, concurrency: float) -> dict:
    """The whole paper sweep's time: the measured pretraining + seed grid, plus the search from epoch times.

    jobs are finished fine-tuning results with group, epoch_s and setup_s; concurrency is how many
    trials ran at once on average (sum of trial walls / stage wall), assumed for the search too.
    """
    s = plan.search
    per_group: dict[str, list[dict]] = {}
    for j in jobs:
        if j.get("epoch_s") is not None:
            per_group.setdefault(j["group"], []).append(j)
    expected, bound = 0.0, 0.0
    for runs in per_group.values():
        epoch_s = statistics.mean(j["epoch_s"] for j in runs)
        setup_s = statistics.mean(j["setup_s"] for j in runs)
        expected += s.samples_per_group * setup_s + asha_epochs(s.samples_per_group, s.grace_period,
                                                                s.reduction_factor, s.epochs) * epoch_s
        bound += s.samples_per_group * (setup_s + s.epochs * epoch_s)
    conc = max(concurrency, 1.0)
    search_s = expected / conc if s.enabled else 0.0
    return {"measured_s": round(measured_s, 1), "search_estimate_s": round(search_s, 1),
            "search_upper_bound_s": round(bound / conc if s.enabled else 0.0, 1),
            "total_s": round(measured_s + search_s, 1), "search_trials": s.samples_per_group * len(per_group)
            if s.enabled else 0, "groups_measured": len(per_group), "concurrency": round(conc, 2),
            "how": "pretraining + seed grid as measured here; search = per group samples_per_group trials, "
                   "ASHA's expected epochs (all to grace, 1/reduction_factor onwards) x the group's measured "
                   "seconds per epoch + setup, divided by the measured concurrency; upper bound = no early stop"}
