"""bench.sampler_choice: its ASHA is Ray's rule, and the comparison gives a chance per sampler and budget."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest


@pytest.mark.parametrize("grace, rf, max_t", [(2, 3, 15), (3, 3, 15), (5, 3, 50), (1, 2, 16)])
def test_asha_stops_each_trial_where_rays_scheduler_does(grace, rf, max_t):
    """Against Ray's AsyncHyperBandScheduler fed the same trials one after another: curves of random values
    and random lengths (trials that patience ended early) are stopped at the same epoch."""
    from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

    from bench.sampler_choice import Asha

    rng = np.random.default_rng(grace * 100 + max_t)
    ray_asha = AsyncHyperBandScheduler(time_attr="epoch", metric="v", mode="max", grace_period=grace,
                                       reduction_factor=rf, max_t=max_t)
    ours, recorded, stopped_early = Asha(grace, rf, max_t), {}, 0
    for k in range(40):
        curve = rng.uniform(0, 1, rng.integers(1, max_t + 1))
        trial = SimpleNamespace(trial_id=f"t{k}")
        ray_asha.on_trial_add(None, trial)
        ran = len(curve)
        for epoch, v in enumerate(curve, 1):
            if ray_asha.on_trial_result(None, trial, {"epoch": epoch, "v": float(v)}) == TrialScheduler.STOP:
                ran = epoch
                break
        ray_asha.on_trial_complete(None, trial, {"epoch": ran, "v": float(curve[ran - 1])})
        assert ours.epochs_run(curve, recorded) == ran, f"trial {k}"
        stopped_early += ran < len(curve)
    assert stopped_early >= 5  # the rule was exercised, not just every trial running to its end


def test_the_comparison_gives_a_chance_for_every_sampler_and_budget(tmp_path, capsys):
    from bench import sampler_choice

    assert sampler_choice.main(["--replicates", "2", "--json", str(tmp_path / "r.json")]) == 0
    rate = json.loads((tmp_path / "r.json").read_text())["rate"]
    assert {(r["margin"], r["samples"]) for r in rate} == {(m, b) for m in sampler_choice.MARGINS
                                                           for b in sampler_choice.BUDGETS}
    for r in rate:
        assert set(r) - {"margin", "samples"} == set(sampler_choice.samplers(0))
        assert all(r[n] in (0.0, 0.5, 1.0) for n in sampler_choice.samplers(0))  # a share of 2 searches
    assert "| 0.02 | 10 |" in capsys.readouterr().out


def test_paired_counts_the_searches_only_one_sampler_got_right_and_tests_them_exactly():
    from bench.sampler_choice import paired

    a = [1] * 12 + [0] * 2 + [1] * 6
    b = [0] * 12 + [1] * 2 + [1] * 6
    diff, only_a, only_b, p = paired(a, b)
    assert (only_a, only_b) == (12, 2) and diff == (12 - 2) / 20
    assert p == pytest.approx(2 * sum(math.comb(14, k) for k in range(3)) / 2**14)  # McNemar exact, two-sided
    assert paired(a, a)[1:] == (0, 0, 1.0)  # nothing discordant: no evidence either way
    with pytest.raises(ValueError, match="same searches"):
        paired(a, b[:-1])


def test_the_paired_table_compares_every_other_sampler_with_the_shipped_one_after_holm():
    from bench.sampler_choice import SHIPPED, paired_table

    strong = {SHIPPED: [1] * 30, "random": [0] * 30, "sobol": [1] * 29 + [0]}
    table = paired_table({(0.01, 8): strong, (0.01, 10): strong})
    assert f"| margin | samples per group | {SHIPPED} − random | {SHIPPED} − sobol |" in table
    row = next(line for line in table.splitlines() if line.startswith("| 0.01 | 8 |"))
    # 30:0 discordant: raw p 2^-29, times the family of 4 by Holm; 1:0: p 1 stays 1.
    assert f"+1.00 (30:0) p={min(1, 4 * 2 * 0.5**30):.2g}*" in row and "+0.03 (1:0) p=1 |" in row
    assert "Holm-adjusted over the 4 cells" in table
