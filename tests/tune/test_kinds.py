"""Sweep kinds as data: a benchmark is one registry entry and one sweep file, and nothing else asks its name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from helpers import REPO, launch_module, stage_runs
from mlflow.tracking import MlflowClient

from ssrl.config import ConfigError
from ssrl.kinds import EVAL_KEYS, FEWSHOT, KINDS, SCARCITY, SweepKind, kind_of, kind_of_row, register
from ssrl.tune.spec import SweepError, load_sweep

# A third benchmark: linear probes only, every cell against random_frozen at its fraction
PROBE_YAML = {
    "name": "probe", "task": "superdiagnostic", "metric": "test_macro_auroc",
    "tracks": ["random_frozen", "supervised"], "fractions": [0.5, 1.0], "seeds": [1, 2],
    "train": {"encoder": "cnn6", "epochs": 2, "patience": 2, "batch_size": 32, "lr": 0.001, "encoder_width": 8},
    "search": {"enabled": False},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "checkpoint_every": 1},
    "scales": {"smoke": {"data": {"records": 240}}},
}


def _vs_random_frozen(cells: list[dict], metric: str) -> None:
    from ssrl.report.stats import add_paired_vs

    add_paired_vs(cells, metric, "random_frozen", ("fraction",))


@pytest.fixture
def probe_kind(tmp_path):
    """The toy kind registered, and a sweeps folder holding its file (and pretrain.yaml, which every run reads)."""
    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    (sweeps / "probe.yaml").write_text(yaml.safe_dump(PROBE_YAML))
    shutil.copy(REPO / "sweeps" / "pretrain.yaml", sweeps)
    kind = register(SweepKind("probe", keys=EVAL_KEYS | {"tracks", "fractions"}, place="fraction",
                              cell_keys=("track", "method", "fraction"), baseline_track="random_frozen",
                              list_cells=SCARCITY.list_cells, contrasts=_vs_random_frozen))
    yield kind, sweeps
    del KINDS["probe"]


def test_the_three_benchmarks_are_registered_and_place_their_cells():
    assert list(KINDS) == ["pretrain", "scarcity", "fewshot"]
    assert (SCARCITY.place, FEWSHOT.place, KINDS["pretrain"].evaluates) == ("fraction", "n_labelled", False)
    assert kind_of_row({"track": "scratch", "n_labelled": 70}) is FEWSHOT
    assert kind_of_row({"track": "supervised", "fraction": 0.1}) is SCARCITY
    with pytest.raises(ValueError, match="unknown sweep 'nope'"):
        kind_of("nope")
    with pytest.raises(ValueError, match="needs a place"):
        register(SweepKind("placeless"))
    assert "placeless" not in KINDS


def test_a_kind_checks_its_own_cells(edited_sweeps):
    bad = [{"track": "scratch", "n": 70, "lr": 0.1}]
    with pytest.raises(SweepError, match="unknown key.*lr in conditions"):
        load_sweep("fewshot", "paper", edited_sweeps(fewshot={"conditions": bad}))
    with pytest.raises(ConfigError, match="multiple of 5"):
        FEWSHOT.list_cells({"conditions": [{"track": "scratch", "n": 12}]}, "rhythm5")
    with pytest.raises(ConfigError, match="out of range"):
        SCARCITY.list_cells({"tracks": ["supervised"], "fractions": [0.0]}, "superdiagnostic")


def test_a_third_benchmark_is_one_registry_entry_and_one_sweep_file(probe_kind, ray_session, synth_root,
                                                                    cache_dir, tmp_path):
    """The toy kind runs end to end: parsed, launched (--sweep accepts it), trained on Ray, its cells carry
    the kind's own contrast, and its MLflow runs are tagged with the kind's place."""
    from ssrl.tune.runner import LaunchOptions, run_sweep

    kind, sweeps = probe_kind
    spec = load_sweep("probe", "smoke", sweeps)
    assert spec.kind is kind and not spec.needs_pretraining
    assert [c.group for c in spec.cells] == ["random_frozen@0.5", "supervised@0.5", "random_frozen@1.0",
                                             "supervised@1.0"]
    assert launch_module().parse_args(["--sweep", "probe"]).sweep == "probe"
    with pytest.raises(SweepError, match="unknown key.*conditions"):
        load_sweep("probe", "smoke", _with(sweeps, conditions=[{"track": "supervised", "n": 10}]))

    out = tmp_path / "runs"
    res = run_sweep(LaunchOptions(sweep="probe", scale="smoke", data_root=str(synth_root), out=str(out),
                                  storage=ray_session.storage + "/probe", sweeps_dir=str(sweeps), max_concurrent=2))
    assert (res["sweep"], res["n_runs"], res["n_failed"], res["baseline_track"]) == ("probe", 8, 0, "random_frozen")
    assert "trivial_baseline" not in res
    by_group = {(c["track"], c["fraction"]): c for c in res["cells"]}
    assert set(by_group) == {(t, f) for t in ("random_frozen", "supervised") for f in (0.5, 1.0)}
    for f in (0.5, 1.0):
        vs = by_group[("supervised", f)]["vs_random_frozen"]
        assert vs["n_pairs"] == 2
        mine = {r["seed"]: r["test_macro_auroc"] for r in by_group[("supervised", f)]["per_seed"]}
        base = {r["seed"]: r["test_macro_auroc"] for r in by_group[("random_frozen", f)]["per_seed"]}
        assert vs["mean_diff"] == pytest.approx(sum(mine[s] - base[s] for s in (1, 2)) / 2)
        assert "vs_random_frozen" not in by_group[("random_frozen", f)]
    assert (out / "probe" / "results.md").exists() and not (out / "probe" / "probe.png").exists()
    runs = stage_runs(MlflowClient(f"sqlite:///{out / 'mlflow.db'}"), res, "eval")
    assert sorted((r.data.tags["track"], r.data.tags["fraction"], r.data.tags["seed"]) for r in runs) == sorted(
        (t, str(f), str(s)) for t in ("random_frozen", "supervised") for f in (0.5, 1.0) for s in (1, 2))


def _with(sweeps: Path, **changes) -> Path:
    raw = {**PROBE_YAML, **changes}
    folder = sweeps.parent / "edited"
    folder.mkdir(exist_ok=True)
    (folder / "probe.yaml").write_text(yaml.safe_dump(raw))
    return folder
