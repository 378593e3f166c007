"""bench.sampler_real: a real objective measured once on a grid (resumable), samplers' searches replayed on it."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from bench import sampler_real

LRS, WDS = (-5.0, -3.5, -2.0), (-6.0, -2.0)


def hand_built(best: tuple[int, int] = (1, 0), repeats: int = 2, epochs: int = 6) -> dict:
    """A surface of one group whose point `best` is higher than every other at every epoch of every repeat."""
    ramp = 1 - np.exp(-np.arange(1, epochs + 1) / 2)
    rng = np.random.default_rng(0)
    runs = [{"group": "g", "lr": lr, "weight_decay": wd, "seed": s,
             "val": list((0.8 if (i, j) == best else 0.3 + 0.1 * rng.uniform()) * ramp
                         + rng.normal(0, 0.005, epochs))}
            for s in range(repeats) for i, lr in enumerate(LRS) for j, wd in enumerate(WDS)]
    return {"format": sampler_real.FORMAT, "runs": runs, "settings": {
        "groups": ["g"], "box_log10": {"lr": [-5.0, -2.0], "weight_decay": [-6.0, -2.0]},
        "grid_log10": {"lr": list(LRS), "weight_decay": list(WDS)},
        "asha": {"grace_period": 1, "reduction_factor": 3, "max_t": epochs}}}


def test_snapping_takes_the_nearest_grid_point_in_log_space():
    surf = sampler_real.Surface(np.array(sampler_real.grid(-5, -2, 7)), np.array(sampler_real.grid(-6, -2, 4)), [])
    last = (6, 3)
    assert surf.snap(-5, -6) == (0, 0) and surf.snap(-2, -2) == last  # the box's corners
    assert surf.snap(-5, -2) == (0, 3) and surf.snap(-2, -6) == (6, 0)
    assert surf.snap(-4.76, -4.7) == (0, 1) and surf.snap(-4.74, -4.6) == (1, 1)  # grid -5, -4.5 / -4.67, -3.33


class EveryPoint(optuna.samplers.BaseSampler):
    """Exhaustive: every grid point once, in a seeded random order (Optuna's GridSampler stops the study when
    its grid is done, which only works inside study.optimize)."""

    def __init__(self, seed: int) -> None:
        self.points = [(lr, wd) for lr in LRS for wd in WDS]
        self.order = np.random.default_rng(seed).permutation(len(self.points))

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        lr, wd = self.points[self.order[trial.number % len(self.points)]]
        return lr if param_name == "lr" else wd


def test_more_samples_find_the_best_point_more_often_and_every_point_finds_it():
    def candidates(seed: int) -> dict[str, optuna.samplers.BaseSampler]:
        return {"random": optuna.samplers.RandomSampler(seed=seed), "every point": EveryPoint(seed)}

    rate = sampler_real.replay(hand_built(), replicates=60, margins=(0.05,), budgets=(1, 6), candidates=candidates)
    one, six = rate["g", 0.05, 1], rate["g", 0.05, 6]
    assert one["random"] < 0.4 < six["random"]  # one draw of six points; six draws
    assert six["every point"] == 1.0  # all six points tried: the best one is chosen, ASHA never stops it
    moved = hand_built(best=(2, 1))
    assert sampler_real.replay(moved, 20, (0.05,), (6,), candidates)["g", 0.05, 6]["every point"] == 1.0


def test_replay_prints_tables_and_a_missing_file_or_bad_margin_is_one_line(tmp_path, capsys):
    path = tmp_path / "surface.json"
    with pytest.raises(SystemExit, match=f"{path}: no such surface file"):
        sampler_real.main(["replay", str(path)])
    surface = hand_built()
    path.write_text(json.dumps(surface))
    top = np.mean([max(r["val"]) for r in surface["runs"] if (r["lr"], r["weight_decay"]) == (-3.5, -6.0)])
    with pytest.raises(SystemExit, match="--margins 0.0: a margin"):
        sampler_real.main(["replay", str(path), "--margins", "0.02", "0"])
    assert sampler_real.main(["replay", str(path), "--replicates", "3", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "| 0.02 | 10 |" in out and "tpe-3-mv" in out and f"| -3.5 | {top:.3f} |" in out  # the grid's best
    assert "| tpe-3-mv − random |" in out and "McNemar" in out  # the paired table, every search once per sampler
    saved = json.loads((tmp_path / "r.json").read_text())
    rows = saved["rate"]
    assert {r["group"] for r in rows} == {"g", "all"} and all(0 <= r["random"] <= 1 for r in rows)
    by_key = {(r["group"], r["margin"], r["samples"]): r for r in rows}
    for o in saved["outcomes"]:  # each search's outcome is kept, and they add up to the chance
        assert len(o["random"]) == 3 and o["random"].count("1") / 3 == by_key[o["group"], o["margin"], o["samples"]]["random"]


def test_measure_writes_the_surface_and_a_resumed_measure_trains_only_what_is_missing(
        synth_root, cache_dir, tmp_path, monkeypatch):
    import ssrl.train

    real, calls, kill_at = ssrl.train.finetune, [], [2]

    def spy(cfg, report, out_dir=None):
        calls.append((cfg.lr, cfg.weight_decay, cfg.seed))
        if len(calls) in kill_at:
            raise KeyboardInterrupt  # killed while training the second point
        return real(cfg, report, out_dir)

    monkeypatch.setattr(ssrl.train, "finetune", spy)
    out = tmp_path / "surface.json"
    args = dict(sweep="fewshot", scale="smoke", groups=["scratch@N10"], lr_points=2, wd_points=1, repeats=1,
                data_root=str(synth_root), say=lambda line: None)
    with pytest.raises(KeyboardInterrupt):
        sampler_real.measure(out, **args)
    held = json.loads(out.read_text())
    assert len(held["runs"]) == 1  # written after the first run, whole

    calls.clear()
    kill_at.clear()
    surface = sampler_real.measure(out, **args)
    assert calls == [(pytest.approx(1e-2), pytest.approx(1e-6), 0)]  # only the point the kill left out
    text = out.read_text()
    assert json.loads(text) == surface and str(synth_root) not in text and str(tmp_path) not in text
    s = surface["settings"]
    assert s["grid_log10"] == {"lr": [-5.0, -2.0], "weight_decay": [-6.0]} and s["seeds"] == [0]
    assert s["asha"] == {"grace_period": 1, "reduction_factor": 3, "max_t": 3}  # the smoke scale's search
    assert s["train"]["scratch@N10"]["n_per_class"] == 2 and s["train"]["scratch@N10"]["epochs"] == 3
    assert surface["data"]["name"] == "synthetic" and surface["data"]["records"] == 400
    assert {"cpu", "torch", "threads"} <= set(surface["machine"])
    assert surface["precision"] == sorted({r["precision"] for r in surface["runs"]})
    assert [(r["lr"], r["seed"]) for r in surface["runs"]] == [(-5.0, 0), (-2.0, 0)]
    for r in surface["runs"]:
        assert 1 <= len(r["val"]) <= 3 and all(0 <= v <= 1 for v in r["val"]) and 0 <= r["test"] <= 1

    calls.clear()
    assert sampler_real.measure(out, **args)["runs"] == surface["runs"] and calls == []  # nothing left to train
    assert len(sampler_real.measure(out, **{**args, "repeats": 2})["runs"]) == 4 and len(calls) == 2  # a new seed
    with pytest.raises(SystemExit, match="other settings \\(grid_log10\\)"):
        sampler_real.measure(out, **{**args, "lr_points": 3})
