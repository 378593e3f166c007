"""Smoke sweeps of all three sweeps, end to end on local Ray over synthetic PTB-XL."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ssrl.tune.spec import SweepError, load_sweep


def _load(smoke_runs, sweep: str) -> dict:
    return json.loads((smoke_runs.out / sweep / "results.json").read_text())


def test_pretrain_sweep_publishes_reusable_checkpoints(smoke_runs):
    res = _load(smoke_runs, "pretrain")
    assert res["metric"] == "probe_score"
    assert [c["track"] for c in res["cells"]] == ["simclr", "byol", "masked"]
    published = list(Path(smoke_runs.storage, "pretrained").glob("*/DONE"))
    assert len(published) == 3
    for done in published:
        assert (done.parent / "encoder_best.pt").exists() and not (done.parent / "state.pt").exists()
    # scarcity and fewshot reused the finished simclr and masked pretrainings instead of training again
    assert len(list(Path(smoke_runs.storage).glob("pretrain-*"))) == 1


def test_scarcity_results_cover_every_track_fraction_and_seed(smoke_runs):
    res = _load(smoke_runs, "scarcity")
    spec = load_sweep("scarcity", "smoke")
    assert res["sweep"] == "scarcity" and res["metric"] == "test_macro_auroc"
    assert res["dataset"]["name"] == "synthetic" and res["dataset"]["task"] == "superdiagnostic"
    assert len(res["dataset"]["fingerprint"]) >= 16
    cells = {(c["track"], c.get("method"), c["fraction"]): c for c in res["cells"]}
    assert set(cells) == {(c.track, c.method or None, c.fraction) for c in spec.cells}
    # every SSL track once per method, on the same subsets and seeds: the methods compare paired
    assert {m for _, m, _ in cells} == {None, "simclr", "masked"}
    for (track, method, _fraction), cell in cells.items():
        assert cell["seeds"] == list(spec.seeds), cell.get("failed")
        values = [r["test_macro_auroc"] for r in cell["per_seed"]]
        assert cell["mean"] == pytest.approx(sum(values) / len(values))
        assert cell["ci95"][0] <= cell["mean"] <= cell["ci95"][1]
        assert all(r["best_epoch"] >= 1 for r in cell["per_seed"])
        if track != "supervised":
            assert cell["vs_supervised"]["n_pairs"] == len(spec.seeds)
        assert ("between_methods" in cell) == (method == "masked")
        if method == "masked":
            simclr = cells[(track, "simclr", _fraction)]
            diffs = [a["test_macro_auroc"] - b["test_macro_auroc"] for a, b in zip(cell["per_seed"], simclr["per_seed"])]
            assert cell["between_methods"]["simclr"]["mean_diff"] == pytest.approx(sum(diffs) / len(diffs))
            assert cell["between_methods"]["simclr"]["n_pairs"] == len(spec.seeds)
    # paired subsets: every track saw the same number of labels at a fraction
    for f in {f for _, _, f in cells}:
        assert len({c["n_labelled_used"] for (_, _, ff), c in cells.items() if ff == f}) == 1
    assert res["pretraining"]["methods"] == ["simclr", "masked"]
    table = (smoke_runs.out / "scarcity" / "results.md").read_text()
    assert "| ssl_finetune[masked]" in table and "| ssl_frozen[simclr]" in table and "masked − simclr" in table
    assert (smoke_runs.out / "scarcity" / "scarcity.png").stat().st_size > 1000


def test_fewshot_results_search_then_seeds(smoke_runs):
    res = _load(smoke_runs, "fewshot")
    assert res["metric"] == "test_macro_f1"
    assert all(c["n_labelled_used"] == c["n_labelled"] for c in res["cells"])  # N realised: classes hold N / 5
    assert {(c["track"], c.get("method"), c["n_labelled"], c.get("bn_stats")) for c in res["cells"]} == {
        ("scratch", None, 10, "precise"), ("scratch", None, 10, "running"), ("ssl", "simclr", 10, "precise"),
        ("ssl", "masked", 10, "precise"), ("hrv_logreg", None, 10, None), ("scratch", None, 20, "precise"),
        ("hr_rule", None, 0, None), ("hybrid", "simclr", 10, None), ("hybrid", "masked", 10, None)}
    assert res["trivial_baseline"]["class"] == "SR" and res["baseline_track"] == "scratch"
    # smoke pretrains one encoder, shared by both evaluation seeds
    assert res["pretraining"] == {"methods": ["simclr", "masked"], "selection": "last", "per_seed": False,
                                  "seeds": [42]}
    assert 0.0 < res["trivial_baseline"]["value"] < 0.5
    assert res["search"] == {"sampler": "optuna TPESampler (multivariate)", "n_startup_trials": 3,
                             "samples_per_group": 2, "random_only": True}  # 2 samples: every one random
    chosen = res["chosen_hyperparameters"]
    assert set(chosen) == {"scratch@N10", "ssl[simclr]@N10", "ssl[masked]@N10", "scratch@N20",
                           "scratch@N10:running"}  # no search for the controls (hrv_logreg, hr_rule, hybrid)
    for hp in chosen.values():
        assert 1e-5 <= hp["lr"] <= 1e-2 and 1 <= hp["n_trials"] <= 2 and 0.0 <= hp["val_score"] <= 1.0
    for cell in res["cells"]:
        label = f"{cell['track']}[{cell['method']}]" if cell.get("method") else cell["track"]
        group = f"{label}@N{cell['n_labelled']}" + (":running" if cell.get("bn_stats") == "running" else "")
        if cell["track"] in ("hrv_logreg", "hr_rule", "hybrid"):  # controls: no collapse verdict, no epochs
            assert cell["collapse_rate"] is None and ("vs_scratch" in cell) == (cell["track"] != "hr_rule")
            assert ("vs_hr_rule" in cell) == (cell["track"] != "hr_rule")
            assert ("vs_hrv_logreg" in cell) == (cell["track"] == "hybrid")
            continue
        # every deep condition against the controls: the rule, and the logistic regression at the same N
        assert "vs_hr_rule" in cell and ("vs_hrv_logreg" in cell) == (cell["n_labelled"] == 10)
        assert 0.0 <= cell["collapse_rate"] <= 1.0 and 0.0 <= cell["single_class_rate"] <= 1.0
        assert ("vs_scratch" in cell) == (cell["track"] != "scratch")
        assert ("vs_precise" in cell) == (cell["bn_stats"] == "running")
        for r in cell["per_seed"]:
            assert r["lr"] == pytest.approx(chosen[group]["lr"])
            assert r["collapsed"] == (r["best_epoch"] <= 1)
    assert (smoke_runs.out / "fewshot" / "fewshot.png").exists()


@pytest.mark.parametrize("sweep", ["scarcity", "fewshot"])
def test_every_cell_rescores_from_the_published_probabilities(smoke_runs, sweep, capsys):
    """predictions.npz holds one float32 probability table per finished trial; re-scoring it gives every seed's
    value in results.json (python -m ssrl.report rescore FILE --results results.json exits 0)."""
    from ssrl.report.__main__ import main

    folder = smoke_runs.out / sweep
    res = _load(smoke_runs, sweep)
    with np.load(folder / "predictions.npz") as z:
        assert z["prob"].dtype == np.float32
        assert len(z["prob"]) == sum(len(c["per_seed"]) for c in res["cells"]) == res["n_runs"] - res["n_failed"]
    assert main(["rescore", str(folder / "predictions.npz"), "--results", str(folder / "results.json")]) == 0
    out = capsys.readouterr().out
    assert f"{res['n_runs'] - res['n_failed']} trials re-scored; 0 disagree" in out
    # the re-scored cells carry the same paired statistics as results.json (the kind's cells for both)
    from ssrl.kinds import KINDS
    from ssrl.report.rescore import rescore

    metric, rows = rescore(folder / "predictions.npz")
    kind = KINDS[sweep]
    again = {tuple(c.get(k) for k in kind.cell_keys): c for c in kind.cells(rows, metric, ["simclr", "masked"])}
    contrasts = 0
    for cell in res["cells"]:
        mine = again[tuple(cell.get(k) for k in kind.cell_keys)]
        for name in ("vs_supervised", "vs_scratch", "between_methods"):
            assert (name in cell) == (name in mine), (cell["track"], name)
            if name == "between_methods" and name in cell:
                assert mine[name]["simclr"]["mean_diff"] == pytest.approx(cell[name]["simclr"]["mean_diff"], abs=1e-9)
                contrasts += 1
            elif name in cell and cell[name].get("mean_diff") is not None:
                assert mine[name]["mean_diff"] == pytest.approx(cell[name]["mean_diff"], abs=1e-9)
                contrasts += 1
    assert contrasts >= 3


def test_results_json_is_strict_json(smoke_runs):
    for sweep in ("pretrain", "scarcity", "fewshot"):
        text = (smoke_runs.out / sweep / "results.json").read_text()
        def refuse(constant: str, sweep: str = sweep) -> None:
            pytest.fail(f"{sweep}: {constant} in results.json")

        json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize(("sweep", "scale", "msg"), [("nope", "smoke", "unknown sweep"),
                                                     ("scarcity", "huge", "unknown scale")])
def test_unknown_sweep_or_scale(sweep, scale, msg):
    with pytest.raises(SweepError, match=msg):
        load_sweep(sweep, scale)


def test_fractional_resources_are_kept(edited_sweeps):
    sweeps = edited_sweeps(scarcity={"scales.smoke.resources": {"cpus_per_trial": 0.5, "gpus_per_trial": 0.25}})
    res = load_sweep("scarcity", "smoke", sweeps).resources
    assert (res.cpus_per_trial, res.gpus_per_trial) == (0.5, 0.25)


def test_every_scale_keeps_the_protocol_shape():
    for scale in ("smoke", "demo", "cpu", "paper"):
        sc = load_sweep("scarcity", scale)
        assert {c.track for c in sc.cells} == {"supervised", "ssl_finetune", "ssl_frozen", "random_frozen"}
        assert len({c.fraction for c in sc.cells}) >= 2
        fs = load_sweep("fewshot", scale)
        assert {c.track for c in fs.cells} >= {"scratch", "ssl"}
        assert fs.search.enabled
    paper = load_sweep("fewshot", "paper")
    assert {(c.track, c.n_labelled, c.bn_stats) for c in paper.cells} == {
        ("scratch", 70, ""), ("scratch_aug", 70, ""), ("ssl", 70, ""), ("ssl_aug", 70, ""), ("scratch", 300, ""),
        ("ssl", 300, ""),
        ("scratch", 70, "running"), ("ssl", 70, "running"), ("hrv_logreg", 70, ""), ("hrv_logreg", 300, ""),
        ("hr_rule", 0, ""), ("hybrid", 70, ""), ("hybrid_random", 70, ""), ("hybrid", 300, ""),
        ("hybrid_random", 300, "")}
    demo = load_sweep("fewshot", "demo")
    assert {c.n_labelled for c in demo.cells} == {0, 70, 300}  # 0: the zero-label rule
    assert load_sweep("scarcity", "paper").search.enabled
    assert sorted({c.fraction for c in load_sweep("scarcity", "paper").cells}) == [0.01, 0.05, 0.1, 0.25, 1.0]


def test_pretraining_inside_a_sweep_gets_the_resources_of_sweeps_pretrain(edited_sweeps, ray_session, synth_root,
                                                                          cache_dir, tmp_path, monkeypatch):
    """scarcity's trials take 1 CPU; the SimCLR run it starts first takes what pretrain.yaml gives it (2)."""
    from ssrl.tune import runner, stages

    seen = {}

    def ensure_pretrained(ctx, spec, methods):
        seen.update(cpus=ctx.cpus, pretrain_cpus=ctx.pretrain_cpus, pretrain_gpus=ctx.pretrain_gpus)
        raise KeyboardInterrupt  # enough seen: stop the sweep here

    def run(ctx, name, trainable, space, resources, tune_config, stage):
        seen[stage] = resources
        return []

    sweeps = edited_sweeps(pretrain={"scales.smoke.resources.cpus_per_trial": 2})
    opts = runner.LaunchOptions(sweep="scarcity", scale="smoke", data_root=str(synth_root), out=str(tmp_path / "out"),
                                storage=str(tmp_path / "storage"), sweeps_dir=str(sweeps))
    monkeypatch.setattr(stages, "ensure_pretrained", ensure_pretrained)
    with pytest.raises(KeyboardInterrupt):
        runner.run_sweep(opts)
    assert seen == {"cpus": 1, "pretrain_cpus": 2, "pretrain_gpus": 0}

    monkeypatch.undo()
    monkeypatch.setattr(stages, "_run", run)
    ctx = stages.Context(storage=str(tmp_path / "storage"), run_id="r", dataset=SimpleNamespace(
        name="synthetic", fingerprint="f" * 64, root=str(synth_root), sampling_rate=100), cpus=1, gpus=0,
        max_concurrent=None, resume=False, pretrain_cpus=2, pretrain_gpus=0.5)
    assert stages.ensure_pretrained(ctx, load_sweep("pretrain", "smoke"), ("simclr",)) == []
    assert seen["pretrain"] == {"cpu": 2, "gpu": 0.5}


def test_each_evaluation_seed_fine_tunes_the_encoder_pretrained_with_its_seed(edited_sweeps, ray_session, synth_root,
                                                                              cache_dir, tmp_path):
    """When the pretrain sweep pretrains every evaluation seed (as at paper scale), seed s fine-tunes encoder s."""
    from mlflow.tracking import MlflowClient

    from ssrl.tune import runner

    sweeps = edited_sweeps(pretrain={"scales.smoke.seeds": [42, 52], "scales.smoke.methods": ["simclr"]},
                           fewshot={"scales.smoke.pretrain_methods": ["simclr"],
                                    "scales.smoke.conditions": [{"track": "ssl", "n": 10}, {"track": "scratch", "n": 10}],
                                    "scales.smoke.search": {"enabled": False}})
    out = tmp_path / "runs"
    res = runner.run_sweep(runner.LaunchOptions(sweep="fewshot", scale="smoke", data_root=str(synth_root), out=str(out),
                                                storage=str(tmp_path / "storage"), sweeps_dir=str(sweeps),
                                                max_concurrent=2))
    assert res["pretraining"] == {"methods": ["simclr"], "selection": "last", "per_seed": True, "seeds": [42, 52]}
    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    exp = client.get_experiment_by_name("ssrl-fewshot")
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'eval'", max_results=100)
    used = {(r.data.tags["track"], r.data.tags["seed"]): r.data.params.get("pretrained_uri", "") for r in runs}
    assert used[("scratch", "42")] == used[("scratch", "52")] == ""
    assert used[("ssl", "42")] != used[("ssl", "52")] and all(used[("ssl", s)] for s in ("42", "52"))
