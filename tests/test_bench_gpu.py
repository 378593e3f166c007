"""bench.gpu: the whole script at tiny size on CPU as on a lent GPU machine (its sweep is launch.py's), its
parts, and the CUDA checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import gpu, gpu_checks, gpu_data, gpu_sweep
from ssrl.data import open_ptbxl, read_ptbxl
from ssrl.tune.spec import load_sweep

ROOT = Path(__file__).resolve().parents[1]
ABSENT_ON_GPU_MACHINES = ("ray", "mlflow", "optuna", "wfdb")  # until the offline bundle is installed
ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true"}


def _bench(tmp_path: Path, *args: str, block: tuple[str, ...] = ()) -> tuple[int, dict]:
    """Run `python -m bench.gpu --json` in a fresh interpreter (and its launch.py) where importing any of
    `block` fails; its exit code and JSON. Ray's temp dir is short (socket paths) and removed afterwards."""
    blocked = tmp_path / "blocked"
    for name in block:  # a package that refuses to import, ahead of site-packages (and in launch.py)
        (blocked / name).mkdir(parents=True, exist_ok=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked: not on the GPU machines')\n")
    ray_tmp = Path(tempfile.mkdtemp(prefix="ssrl-ray-"))
    env = {**os.environ, **ENV, "PYTHONPATH": os.pathsep.join([str(blocked), str(ROOT)]), "RAY_TMPDIR": str(ray_tmp)}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "bench.gpu", "--json", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"),
           "--out", str(tmp_path / "out.json"), *args]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=2400)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode in (0, 1), proc.stderr[-3000:] + proc.stdout[-3000:]
    out = json.loads(proc.stdout)
    assert json.loads((tmp_path / "out.json").read_text())["stages"].keys() == out["stages"].keys()
    return proc.returncode, out


def _keys(x: object) -> set[str]:
    """Every key of a nested JSON value."""
    if isinstance(x, dict):
        return set(x) | {k for v in x.values() for k in _keys(v)}
    if isinstance(x, list):
        return {k for v in x for k in _keys(v)}
    return set()


def _check_cpu_stages(st: dict) -> None:
    """The GPU code paths that run on CPU ran there (bf16 autocast forced), the CUDA-only ones were skipped."""
    assert sorted(st["checks"]["passed"]) == sorted(set(gpu_checks.CHECKS) - set(gpu_checks.CUDA_ONLY))
    assert sorted(st["checks"]["skipped"]) == sorted(gpu_checks.CUDA_ONLY)
    assert st["checks"]["details"]["autocast_bf16"]["precision"] == "bf16"
    for task in ("pretrain", "finetune"):
        tp = st["throughput"][task]
        assert tp["samples_per_s"] > 0 and tp["flops_per_sample"] > 0
        assert tp["tflops"] == pytest.approx(tp["flops_per_sample"] * tp["samples_per_s"] / 1e12)
        # no nominal peak is known for a CPU, and `compile: auto` leaves the CPU step eager: nothing compiled
        assert tp["peak_tflops"] is None and tp["share_of_peak"] is None and tp["compile_s"] is None


@pytest.mark.e2e
def test_tiny_run_on_cpu_runs_the_sweep_through_launch_py(tmp_path: Path) -> None:
    code, out = _bench(tmp_path, "--tiny", "--deadline-s", "1800")  # a loaded CI runner must not cut it
    st = out["stages"]
    assert list(st) == ["data", "checks", "throughput", "sweep"]
    assert code == 0 and out["failed"] == [], (out["failed"], st["sweep"].get("console_tail"))
    assert all(s["wall_s"] > 0 for s in st.values()) and sum(s["wall_s"] for s in st.values()) <= out["wall_s"] + 1
    _check_cpu_stages(st)
    spec, pre = load_sweep("scarcity", "smoke"), load_sweep("pretrain", "smoke")
    assert st["data"]["records"] == spec.data_records  # --tiny: the data launch.py's smoke scale would write
    sw = st["sweep"]
    assert (sw["scale"], sw["started"], sw["cut"], sw["exit_code"]) == ("smoke", True, False, 0), sw.get("console_tail")
    # what the run wrote: results.json's counts, state.json's stage seconds, Ray's trials per stage
    n_eval = len(spec.cells) * len(spec.seeds)
    assert sw["results"]["n_runs"] == n_eval and sw["results"]["n_failed"] == 0
    assert sw["results"]["stage_seconds"] == sw["stage_seconds"]
    assert set(sw["stage_seconds"]) == {"pretrain", "eval"} and all(v > 0 for v in sw["stage_seconds"].values())
    n_pre = len(spec.pretrain_methods) * len(pre.seeds)
    assert {s: (r["planned"], r["trials"], r["done"], r["failed"]) for s, r in sw["stages"].items()} == {
        "pretrain": (n_pre, n_pre, n_pre, 0), "search": (0, 0, 0, 0), "eval": (n_eval, n_eval, n_eval, 0)}
    rates = sw["stages"]["pretrain"]["samples_per_s"]
    assert len(rates["per_trial"]) == n_pre and all(r > 0 for r in rates["per_trial"])
    assert 0 <= sw["outside_stages_s"] < sw["launch_wall_s"]
    assert out["summary"]["sweep"]["trials_done_of_planned"]["eval"] == f"{n_eval}/{n_eval}"
    # nothing is estimated, the run's processes are gone, and the bench itself stayed free of Ray
    assert not {k for k in _keys(out) if "estimate" in k or "paper_sweep" in k}
    assert sw["processes_cleared"]["left"] == 0 and gpu_sweep.session_pids(sw["session"]) == []
    assert not {"ray", "mlflow", "optuna"} & set(out["loaded_optional_modules"])
    # launch.py mapped the signal cache the data stage wrote without wfdb instead of building its own
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    kept = tmp_path / "out-sweep"
    assert json.loads((kept / "results.json").read_text())["n_runs"] == n_eval
    assert json.loads((kept / "state.json").read_text())["stage_seconds"] == sw["stage_seconds"]


def test_without_the_bundle_the_sweep_stage_says_so_and_the_others_run(tmp_path: Path) -> None:
    code, out = _bench(tmp_path, "--tiny", block=ABSENT_ON_GPU_MACHINES)
    st = out["stages"]
    assert code == 1 and out["failed"] == ["sweep"]
    assert st["sweep"]["error"] == ("ray, mlflow, optuna, wfdb not importable: install the offline bundle first: "
                                    "README, Installing offline")
    assert all("error" not in st[s] for s in ("data", "checks", "throughput"))
    assert "not installed" in out["wfdb"] and out["loaded_optional_modules"] == []
    assert st["data"]["cache"] == "written without wfdb" and st["throughput"]["naive"].startswith("skipped")
    _check_cpu_stages(st)


@pytest.mark.e2e
def test_the_deadline_stops_the_sweep_and_its_processes(tmp_path: Path) -> None:
    """A deadline that falls while launch.py runs (starting, pretraining or evaluating, as fast as the CPU
    goes): stopped as Ctrl-C stops it, and the sweep left unfinished. 15 s: launch.py starts about 5 s after the
    bench on a 2-core AVX-512 VM, where the whole tiny sweep wrote its results within 30 s (so a 30 s deadline
    missed it there) and a 15 s one cut it 11.6 s in, during pretraining; slower CPUs are cut earlier in the work."""
    code, out = _bench(tmp_path, "--tiny", "--stages", "data,sweep", "--deadline-s", "15")
    sw = out["stages"]["sweep"]
    assert code == 0 and out["failed"] == [] and sw["started"] and sw["cut"] and sw["exit_code"] != 0
    assert sw["stopped"]["signal"] == "SIGINT" and sw["results"] is None
    assert sw["processes_cleared"]["left"] == 0 and gpu_sweep.session_pids(sw["session"]) == []
    assert {s: r["planned"] for s, r in sw["stages"].items()} == {"pretrain": 2, "search": 0, "eval": 24}
    # how far it got depends on the CPU (a fast runner finishes the 2 pretrainings in 15 s), not whether it finished
    assert all(r.get("done", 0) <= r["planned"] for r in sw["stages"].values())
    assert sw["stages"]["eval"].get("done", 0) < sw["stages"]["eval"]["planned"]
    assert out["summary"]["sweep"]["cut"] is True


STAND_IN = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                          "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"],
                         stdout=subprocess.PIPE, text=True)
child.stdout.readline()
print('running', flush=True)
try:
    time.sleep(600)
except KeyboardInterrupt:
    sys.exit(130)
"""


class _StandIn(gpu_sweep.Launch):
    """A launch.py stand-in: exits 130 on Ctrl-C, leaving a child that ignores SIGINT and SIGTERM."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", STAND_IN]


def test_a_run_past_its_deadline_is_interrupted_and_its_session_emptied(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_sweep, "KILL_GRACE_S", 1.0)
    console = tmp_path / "console.txt"
    ran = gpu_sweep.run_launch(_StandIn("scarcity", "smoke", tmp_path, tmp_path, time.time() + 4, dict(os.environ)),
                               console)
    assert console.read_text().splitlines() == ["running"]  # the deadline fell while it ran
    assert (ran["cut"], ran["exit_code"], ran["stopped"]["exited_within_grace"]) == (True, 130, True)
    assert ran["processes_cleared"] == {"sigterm": 1, "sigkill": 1, "left": 0}
    assert gpu_sweep.session_pids(ran["session"]) == []
    late = gpu_sweep.run_launch(_StandIn("scarcity", "smoke", tmp_path, tmp_path, time.time() - 1, {}), console)
    assert (late["started"], late["cut"]) == (False, True)


def _trial(folder: Path, rows: list[dict], error: bool = False) -> None:
    folder.mkdir(parents=True)
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if error:
        (folder / "error.txt").write_text("Traceback ...")


def test_read_run_counts_trials_per_stage_and_a_pretrainings_records_per_second(tmp_path: Path) -> None:
    run_id = "20261203-070000"
    (tmp_path / "scarcity").mkdir()
    (tmp_path / "scarcity" / "state.json").write_text(json.dumps(
        {"run_id": run_id, "stages": {}, "stage_seconds": {"pretrain": 40.0, "eval": 12.5}}))
    pre, ev = tmp_path / "ray" / f"pretrain-{run_id}", tmp_path / "ray" / f"scarcity-{run_id}-eval"
    epochs = [{"epoch": e, "n_pool": 128, "time_this_iter_s": t} for e, t in ((1, 9.0), (2, 2.0), (3, 2.0))]
    _trial(pre / "simclr", [*epochs[:2], {**epochs[2], "done": True}])
    _trial(pre / "masked", [{**epochs[0], "n_pool": 64}, {**epochs[1], "n_pool": 64, "time_this_iter_s": 4.0},
                            {**epochs[2], "n_pool": 64, "time_this_iter_s": 4.0, "done": True}])
    _trial(ev / "a", [{"epoch": 1}, {"epoch": 2, "done": True}])
    _trial(ev / "b", [{"epoch": 1}], error=True)
    _trial(ev / "c", [{"epoch": 1}])  # cut after its first epoch
    (ev / "d").mkdir()  # created, never started
    got = gpu_sweep.read_run(tmp_path, "scarcity")
    assert got["run_id"] == run_id and got["results"] is None  # no results.json: the run did not finish
    pretrain = got["stages"]["pretrain"]
    assert (pretrain["trials"], pretrain["done"], pretrain["failed"], pretrain["wall_s"]) == (2, 2, 0, 40.0)
    # records per second over the epochs after the first: 128 x 2 / 4 s and 64 x 2 / 8 s
    assert sorted(pretrain["samples_per_s"]["per_trial"]) == [16.0, 64.0]
    assert {k: got["stages"]["eval"][k] for k in ("trials", "done", "failed", "other", "wall_s")} == {
        "trials": 4, "done": 1, "failed": 1, "other": 2, "wall_s": 12.5}
    assert got["stages"]["search"]["trials"] == 0
    (tmp_path / "scarcity" / "results.json").write_text(json.dumps({"run_id": "an-earlier-run", "n_runs": 3}))
    assert gpu_sweep.read_run(tmp_path, "scarcity")["results"] is None


@pytest.mark.parametrize(("args", "option"), [(["--deadline-s", "0"], "--deadline-s"),
                                             (["--stages", "data,estimate"], "--stages"),
                                             (["--records", "0"], "--records"),
                                             (["--gpus-per-trial", "-1"], "--gpus-per-trial")])
def test_bad_input_is_one_line_naming_the_option(args: list[str], option: str,
                                                 capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        gpu.parse_args(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and err.startswith(f"error: {option}")


@pytest.mark.e2e
def test_throughput_stage_measures_the_naive_loop_when_wfdb_is_there(tmp_path: Path) -> None:
    pytest.importorskip("wfdb")
    code, out = _bench(tmp_path, "--tiny", "--records", "300", "--stages", "data,throughput")
    tp = out["stages"]["throughput"]
    assert code == 0 and list(out["stages"]) == ["data", "throughput"] and out["wfdb"] == "installed"
    assert tp["naive"] == "measured"
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(gpu_checks.CHECKS))
def test_cuda_checks(name: str, synth_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    ctx = gpu_checks.Ctx(torch.device("cuda"), open_ptbxl(synth_root, 100, cache_dir), tmp_path)
    gpu_checks.CHECKS[name](ctx)
