"""bench.gpu: the whole script at tiny size on CPU as on a lent GPU machine, its parts, and the CUDA checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import gpu_checks, gpu_data, gpu_pack, gpu_plan
from ssrl.data import open_ptbxl, read_ptbxl
from ssrl.tune.spec import load_sweep

ROOT = Path(__file__).resolve().parents[1]
ABSENT_ON_GPU_MACHINES = ("ray", "mlflow", "optuna", "wfdb")
ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true"}


def _bench(tmp_path: Path, *args: str, block: tuple[str, ...] = ()) -> dict:
    """Run `python -m bench.gpu --json` in a fresh interpreter where importing any of `block` fails."""
    blocked = tmp_path / "blocked"
    for name in block:  # a package that refuses to import, ahead of site-packages (and in spawned workers)
        (blocked / name).mkdir(parents=True, exist_ok=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked: not on the GPU machines')\n")
    env = {**os.environ, **ENV, "PYTHONPATH": os.pathsep.join([str(blocked), str(ROOT)])}
    cmd = [sys.executable, "-m", "bench.gpu", "--json", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"),
           "--out", str(tmp_path / "out.json"), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    out = json.loads(proc.stdout)
    assert json.loads((tmp_path / "out.json").read_text())["stages"].keys() == out["stages"].keys()
    return out


@pytest.mark.e2e
def test_tiny_run_on_cpu_without_ray_mlflow_optuna_wfdb(tmp_path: Path) -> None:
    out = _bench(tmp_path, "--tiny", "--records", "300", block=ABSENT_ON_GPU_MACHINES)
    st = out["stages"]
    assert list(st) == ["data", "checks", "throughput", "scarcity"] and out["failed"] == []
    assert all(s["wall_s"] > 0 for s in st.values()) and sum(s["wall_s"] for s in st.values()) <= out["wall_s"] + 1
    assert out["timed_s"] == pytest.approx(sum(st[s]["wall_s"] for s in ("checks", "throughput", "scarcity")), abs=0.2)
    assert "not installed" in out["wfdb"] and out["loaded_optional_modules"] == []
    assert st["data"]["records"] == 300 and st["data"]["cache"] == "written without wfdb"
    # The GPU code paths that run on CPU ran there (bf16 autocast forced), the CUDA-only ones were skipped.
    assert sorted(st["checks"]["passed"]) == sorted(set(gpu_checks.CHECKS) - set(gpu_checks.CUDA_ONLY))
    assert sorted(st["checks"]["skipped"]) == sorted(gpu_checks.CUDA_ONLY)
    assert st["checks"]["details"]["autocast_bf16"]["precision"] == "bf16"
    assert st["throughput"]["pretrain"]["samples_per_s"] > 0 and st["throughput"]["naive"].startswith("skipped")
    _check_scarcity(st["scarcity"])


def _check_scarcity(sc: dict) -> None:
    """Every planned trial ran once, in k processes, SSL tracks after the pretraining; the estimate adds up."""
    spec = load_sweep("scarcity", "smoke")
    cells = [c for c in spec.cells if c.method in ("", spec.pretrain_methods[0])]  # the first method's SSL tracks
    assert len(cells) < len(spec.cells)  # smoke compares two methods; the GPU bench times one
    n_fine = len(cells) * len(spec.seeds)
    assert sc["planned"] == {"pretrain": 1, "finetune": n_fine, "cells": len(cells), "seeds": len(spec.seeds)}
    assert sc["completed"] == {"pretrain": 1, "finetune": n_fine} and sc["failed"] == {}
    jobs = sc["jobs"]
    assert len({j["name"] for j in jobs}) == len(jobs) == 1 + n_fine
    assert sc["k"] == gpu_pack.choose_k(sc["probe"]["runs"], None) and sc["k"] in sc["probe"]["candidates"]
    assert len({j["pid"] for j in jobs}) == sc["k"]
    pre = next(j for j in jobs if j["name"].startswith("pretrain/"))
    ssl = [j for j in jobs if j["name"].startswith("ssl_")]
    assert len(ssl) == n_fine // 2 and min(j["start_s"] for j in ssl) >= pre["end_s"] - 0.01
    assert all(j["epochs"] >= 1 and j["wall_s"] > 0 and 0 <= j["auroc"] <= 1 for j in jobs if j is not pre)
    assert any("search" in note for note in sc["left_out"])
    ps = sc["paper_sweep"]
    search = load_sweep("scarcity", "paper").search
    assert ps["search_trials"] == search.samples_per_group * len(cells) and ps["groups_measured"] == len(cells)
    assert 0 < ps["search_estimate_s"] <= ps["search_upper_bound_s"]
    assert ps["total_s"] == pytest.approx(ps["measured_s"] + ps["search_estimate_s"], abs=0.2)


@pytest.mark.e2e
def test_throughput_stage_measures_the_naive_loop_when_wfdb_is_there(tmp_path: Path) -> None:
    pytest.importorskip("wfdb")
    out = _bench(tmp_path, "--tiny", "--records", "300", "--stages", "data,throughput")
    tp = out["stages"]["throughput"]
    assert list(out["stages"]) == ["data", "throughput"] and out["wfdb"] == "installed" and tp["naive"] == "measured"
    for task in ("pretrain", "finetune"):
        assert tp[task]["naive_samples_per_s"] > 0
        assert tp[task]["speedup"] == pytest.approx(tp[task]["samples_per_s"] / tp[task]["naive_samples_per_s"])


def test_cache_written_without_wfdb_is_the_one_open_ptbxl_builds(tmp_path: Path, synth_root: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ref = open_ptbxl(synth_root, 100, tmp_path / "by_wfdb")
    npy, written = gpu_data.write_cache(read_ptbxl(synth_root, 100), tmp_path / "direct")
    assert written and npy.name == ref.cache_path.name
    assert not gpu_data.write_cache(read_ptbxl(synth_root, 100), tmp_path / "direct")[1]  # found, not rewritten
    import ssrl.data.cache

    monkeypatch.setattr(ssrl.data.cache, "read_record", lambda *a, **k: pytest.fail("open_ptbxl rebuilt the cache"))
    got = open_ptbxl(synth_root, 100, tmp_path / "direct")
    assert np.array_equal(np.asarray(got.signals), np.asarray(ref.signals))
    np.testing.assert_allclose(got.mean, ref.mean, rtol=1e-6)
    np.testing.assert_allclose(got.std, ref.std, rtol=1e-6)


def test_fmt16_reader_matches_wfdb_for_other_gains_and_baselines(tmp_path: Path) -> None:
    wfdb = pytest.importorskip("wfdb")
    d = np.random.default_rng(0).integers(-3000, 3000, size=(250, 12)).astype(np.int16)
    wfdb.wrsamp("rec", fs=100, units=["mV"] * 12, sig_name=[f"L{i}" for i in range(12)], d_signal=d,
                fmt=["16"] * 12, adc_gain=[200.0 + 50 * i for i in range(12)], baseline=[i - 6 for i in range(12)],
                write_dir=str(tmp_path))
    ref, _ = wfdb.rdsamp(str(tmp_path / "rec"))
    np.testing.assert_array_equal(gpu_data.read_fmt16(tmp_path / "rec"), ref.T.astype(np.float16))


def test_choose_k_takes_the_smallest_near_best_that_fits() -> None:
    runs = [{"k": 1, "epochs_per_s": 1.0, "peak_mib": 1000}, {"k": 2, "epochs_per_s": 1.9, "peak_mib": 1000},
            {"k": 4, "epochs_per_s": 3.0, "peak_mib": 1000}, {"k": 8, "epochs_per_s": 3.1, "peak_mib": 1000}]
    assert gpu_pack.choose_k(runs, None) == 4  # 3.0 is within 95 % of 3.1
    assert gpu_pack.choose_k(runs, 4000) == 2  # 4 x 1000 MiB > 85 % of 4000 MiB
    assert gpu_pack.choose_k([{"k": 2, "error": "OOM"}], None) == 1


def test_asha_epochs_and_the_paper_estimate() -> None:
    assert gpu_plan.asha_epochs(8, 3, 3, 30) == pytest.approx(8 * 3 + 8 / 3 * 6 + 8 / 9 * 18 + 8 / 27 * 3)
    assert gpu_plan.asha_epochs(4, 30, 3, 30) == 4 * 30  # grace = max_t: no early stopping
    search = load_sweep("scarcity", "paper").search
    plan = gpu_plan.Plan("paper", gpu_plan.Job("pretrain", "p", {}), (), search, 1, 1)
    jobs = [{"group": "g", "epoch_s": 2.0, "setup_s": 1.0}, {"group": "g", "epoch_s": 4.0, "setup_s": 3.0}]
    est = gpu_plan.paper_sweep(plan, jobs, measured_s=100.0, concurrency=2.0)
    n, epochs = search.samples_per_group, gpu_plan.asha_epochs(search.samples_per_group, search.grace_period,
                                                               search.reduction_factor, search.epochs)
    assert est["search_estimate_s"] == pytest.approx((n * 2.0 + epochs * 3.0) / 2, abs=0.05)
    assert est["search_upper_bound_s"] == pytest.approx(n * (2.0 + search.epochs * 3.0) / 2, abs=0.05)
    assert est["total_s"] == pytest.approx(100.0 + est["search_estimate_s"], abs=0.05)


def test_paper_plan_is_the_scarcity_sweep(tmp_path: Path) -> None:
    where = {"data_root": "/data", "cache_dir": "", "device": "cuda", "precision": "auto"}
    plan = gpu_plan.plan("paper", where, tmp_path)
    spec, pspec = load_sweep("scarcity", "paper"), load_sweep("pretrain", "paper")
    assert len(plan.finetune) == 5 * 3 * 4 == len([c for c in spec.cells if c.method != "masked"]) * len(spec.seeds)
    assert plan.pretrain.config["epochs"] == pspec.train["epochs"] and not plan.pretrain.config.get("max_pool")
    encoder = str(tmp_path / plan.pretrain.name / "encoder_best.pt")
    for job in plan.finetune:
        track = job.config["track"]
        assert job.config["epochs"] == spec.train["epochs"] and job.config["device"] == "cuda"
        assert job.config["lr"] == spec.track_train.get(track, spec.train)["lr"]
        assert (job.needs, job.config["pretrained"]) == ((plan.pretrain.name, encoder) if track.startswith("ssl_")
                                                         else ("", ""))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(gpu_checks.CHECKS))
def test_cuda_checks(name: str, synth_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    ctx = gpu_checks.Ctx(torch.device("cuda"), open_ptbxl(synth_root, 100, cache_dir), tmp_path)
    gpu_checks.CHECKS[name](ctx)


def test_a_deadline_cuts_a_trial_after_its_epoch(tmp_path: Path, synth_root: Path, cache_dir: Path) -> None:
    where = {"data_root": str(synth_root), "cache_dir": str(cache_dir), "device": "cpu", "precision": "fp32"}
    job = gpu_plan.Job("finetune", "supervised@1.0/seed1", {**where, "encoder_width": 8, "epochs": 5, "seed": 1},
                       "supervised@1.0")
    row = gpu_pack.run_job(asdict(job), str(tmp_path / "a"), deadline=time.time() + 0.01)
    assert row["cut"] and row["error"] is None and row["epochs"] == 1 and row["result"] == {}
    assert not (tmp_path / "a" / "state.pt").exists()  # only a resume reads it
    late = gpu_pack.run_job(asdict(job), str(tmp_path / "b"), deadline=time.time() - 1)
    assert late["cut"] and late["epochs"] == 0 and late["wall_s"] < 1
