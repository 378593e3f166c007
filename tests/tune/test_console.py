"""The console a person follows: progress lines, failed trials, the summary, Ray's output in a log file,
exit codes, trials skipped when their pretraining failed, and --dry-run."""

from __future__ import annotations

import io
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import launch_smoke_scarcity

from ssrl.tune import console, describe
from ssrl.tune.meta import TrialMeta, trial_space

REPO = Path(__file__).resolve().parents[2]
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but newline and tab (includes ESC and \r)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _trials(*statuses: str) -> list:
    return [SimpleNamespace(status=s) for s in statuses]


@pytest.fixture
def plain_console(monkeypatch):
    """A non-terminal console writing to a buffer, with a hand-moved clock, as the running sweep's console."""
    clock = Clock()
    con = console.Console(io.StringIO(), tty=False, clock=clock)
    monkeypatch.setattr(console, "_CURRENT", con)
    return con, clock


def test_not_a_terminal_prints_plain_progress_lines_at_most_every_30_s(plain_console):
    con, clock = plain_console
    progress = console.Progress("eval")
    progress.setup(total_num_samples=4)
    for dt, statuses in [(0, ("RUNNING", "RUNNING")), (10, ("TERMINATED", "RUNNING", "RUNNING")),
                         (19, ("TERMINATED", "RUNNING", "RUNNING")), (2, ("TERMINATED", "ERROR", "RUNNING")),
                         (40, ("TERMINATED", "ERROR", "TERMINATED", "RUNNING"))]:
        clock.t += dt
        progress.on_step_end(0, _trials(*statuses))
    clock.t += 5
    progress.on_experiment_end(_trials("TERMINATED", "ERROR", "TERMINATED", "TERMINATED"))
    lines = con.stream.getvalue().splitlines()
    assert lines == [
        "eval: 0 done, 2 running, 2 pending, 0 failed of 4; 0s so far, time left unknown yet",
        # 31 s after the first line; 2 of 4 finished in 31 s: the other 2 take about as long again
        "eval: 1 done, 1 running, 1 pending, 1 failed of 4; 31s so far, ~31s left",
        "eval: 2 done, 1 running, 0 pending, 1 failed of 4; 1m11s so far, ~24s left",
        "eval: 3 done, 0 running, 0 pending, 1 failed of 4; in 1m16s",
    ]


def test_a_trial_ended_before_its_first_report_is_not_done():
    trials = [SimpleNamespace(status="TERMINATED", last_result={"done": True}),
              SimpleNamespace(status="TERMINATED", last_result={}), SimpleNamespace(status="ERROR")]
    assert console.counts(trials, 4) == {"done": 1, "running": 0, "pending": 2, "failed": 1, "total": 4}


def test_a_search_shows_the_best_validation_score_per_group(plain_console):
    con, clock = plain_console
    progress = console.Progress("search", metric="val_score")
    progress.setup(total_num_samples=6)  # trials not created yet count as pending
    for group, value in [("supervised@0.1", 0.71), ("ssl_finetune@0.1", 0.80), ("supervised@0.1", 0.75),
                         ("ssl_finetune@0.1", float("nan"))]:
        config = trial_space({}, TrialMeta("scarcity", "search", group=group), group)
        progress.on_trial_result(0, [], SimpleNamespace(config=config), {"val_score": value})
    progress.on_step_end(0, _trials("RUNNING"))
    (line,) = con.stream.getvalue().splitlines()
    assert line == ("search: 0 done, 1 running, 5 pending, 0 failed of 6; 0s so far, time left unknown yet; "
                    "best ssl_finetune@0.1 0.800, supervised@0.1 0.750")


def _failed_trial(tmp_path: Path, config: dict) -> SimpleNamespace:
    """A trial as Tune hands it to on_trial_error: its error file locally, its copy in the storage."""
    trial_dir = tmp_path / "storage" / "exp" / "trial_00003"
    trial_dir.mkdir(parents=True)
    staged = tmp_path / "staged-error.txt"
    staged.write_text("Failure # 1 (occurred at 2026-11-30)\nTraceback (most recent call last):\n  File x\n"
                      "ssrl.train.loop.TrainingDiverged: loss became nan in epoch 1; lower the learning rate\n")
    return SimpleNamespace(config=config, trial_id="abc_00003", error_file=str(staged), path=str(trial_dir),
                           storage=SimpleNamespace(storage_filesystem=SimpleNamespace(type_name="local")))


def test_a_failed_trial_is_one_line_with_its_group_seed_reason_and_traceback(plain_console, tmp_path):
    con, _ = plain_console
    meta = TrialMeta("scarcity", "eval", group="random_frozen@0.25", track="random_frozen", fraction=0.25)
    trial = _failed_trial(tmp_path, trial_space({"seed": 52, "track": "random_frozen"}, meta, meta.group))
    console.Progress("eval").on_trial_error(0, [], trial)
    (line,) = con.stream.getvalue().splitlines()
    assert line == ("FAILED eval random_frozen@0.25 seed 52: ssrl.train.loop.TrainingDiverged: loss became nan in "
                    f"epoch 1; lower the learning rate (traceback: {trial.path}/error.txt)")
    pre = _failed_trial(tmp_path / "pre", trial_space({"method": "simclr", "seed": 42}, TrialMeta(
        "pretrain", "pretrain", group="simclr", method="simclr"), "simclr/seed42"))
    assert console.failure_line("pretrain", pre).startswith("FAILED pretrain simclr seed 42: ")


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_failures_print_above_it(monkeypatch, tmp_path):
    clock = Clock()
    con = console.Console(io.StringIO(), tty=True, clock=clock)
    monkeypatch.setattr(console, "_CURRENT", con)
    progress = console.Progress("eval")
    progress.setup(total_num_samples=3)
    for statuses in [("RUNNING",), ("TERMINATED", "RUNNING"), ("TERMINATED", "ERROR", "RUNNING")]:
        clock.t += 1
        progress.on_step_end(0, _trials(*statuses))
    progress.on_trial_error(0, [], _failed_trial(tmp_path, trial_space({"seed": 1}, TrialMeta("scarcity", "eval", group="g@1.0"), "g@1.0")))
    progress.on_experiment_end(_trials("TERMINATED", "ERROR", "TERMINATED"))
    text = con.stream.getvalue()
    assert "\r" in text and not con.bars  # redrawn with carriage returns, closed at the end
    assert "FAILED eval g@1.0 seed 1" in text
    final = text.replace("\r", "\n").strip().splitlines()[-1]
    assert re.match(r"eval\s+\S+ 3/3 \[.*\] 2 done, 0 running, 0 pending, 1 failed$", final), final


def test_progress_pickles_as_its_settings_and_prints_to_the_running_console(plain_console):
    con, _ = plain_console
    progress = console.Progress("search", metric="val_score")
    progress.setup(total_num_samples=2)
    progress.on_step_end(0, _trials("RUNNING"))
    restored = pickle.loads(pickle.dumps(progress))  # what Tuner.restore hands back
    assert (restored.stage, restored.metric, restored.total) == ("search", "val_score", 0)
    restored.setup(total_num_samples=2)
    restored.on_step_end(0, _trials("TERMINATED", "RUNNING"))
    assert con.stream.getvalue().splitlines()[-1].startswith("search: 1 done, 1 running, 0 pending")


def test_the_session_sends_everything_else_on_stdout_and_stderr_to_the_log(tmp_path, capfd):
    log = tmp_path / "logs" / "sweep.log"
    with console.session(log) as con:
        print("a Tune status table")
        print("a Python warning", file=sys.stderr)
        os.write(2, b"[C++ core] a raylet message\n")
        subprocess.run(["sh", "-c", "echo a worker process writing to its inherited stdout"], check=True)
        con.say("ssrl: a line for the person watching")
    print("after the sweep")
    seen = capfd.readouterr()
    assert seen.out == "ssrl: a line for the person watching\nafter the sweep\n" and seen.err == ""
    assert log.read_text().splitlines() == ["a Tune status table", "a Python warning",
                                            "[C++ core] a raylet message",
                                            "a worker process writing to its inherited stdout"]


def test_mlflow_command_opens_this_store():
    runs = "#/experiments/3/runs?workflowType=machine_learning"  # the model-training view, not GenAI's
    assert describe.mlflow_command("http://ann:pw@127.0.0.1:5000/", "3") == f"open http://***@127.0.0.1:5000/{runs}"
    cmd = describe.mlflow_command(f"sqlite:///{Path.cwd() / 'runs' / 'mlflow.db'}", "3")
    assert re.fullmatch(r"\S*mlflow ui --backend-store-uri sqlite:///runs/mlflow.db --host 127.0.0.1\n"
                        rf" +then open http://127.0.0.1:5000/{re.escape(runs)}", cmd), cmd


def test_mlflow_command_without_the_ui_says_where_to_get_it(monkeypatch):
    """With only the skinny client (a GPU node installed from the offline bundle), `mlflow ui` cannot run here."""
    assert describe.mlflow_ui_installed()  # the test environment has the ui extra
    monkeypatch.setattr(describe, "mlflow_ui_installed", lambda: False)
    text = describe.mlflow_command(f"sqlite:///{Path.cwd() / 'runs' / 'mlflow.db'}", "3")
    first, second = text.splitlines()
    assert "the UI needs the full mlflow" in first and "pip install -e '.[ui]'" in first
    assert second.endswith("run there: mlflow ui --backend-store-uri sqlite:///runs/mlflow.db")
    # a tracking server serves its own UI, whatever is installed here
    assert describe.mlflow_command("http://127.0.0.1:5000", "3").startswith("open http://127.0.0.1:5000/")


# --- exit codes, skipped trials ----------------------------------------------------------------------


@pytest.mark.parametrize(("results", "code"), [({"n_runs": 16, "n_failed": 0}, 0),
                                                ({"n_runs": 16, "n_failed": 1}, 1)])
def test_exit_code_says_whether_every_trial_finished(launch, monkeypatch, tmp_path, results, code):
    from ssrl.tune import runner

    monkeypatch.setattr(runner, "run_sweep", lambda opts: results)
    assert launch.main(["--sweep", "scarcity", "--out", str(tmp_path)]) == code


def test_help_states_the_scales_and_exit_codes(launch, capsys):
    with pytest.raises(SystemExit):
        launch.main(["--help"])
    text = capsys.readouterr().out
    for scale in ("smoke", "demo", "cpu", "paper"):
        assert re.search(rf"^  {scale}\s+\S", text, re.M), scale
    for code in ("0", "1", "2", "130"):
        assert re.search(rf"^  {code}\s+\S", text, re.M), code


def test_trials_whose_pretraining_failed_are_not_started_and_recorded_as_skipped(monkeypatch, tmp_path):
    from ssrl.tune import runner, stages
    from ssrl.tune.dataset import DatasetInfo
    from ssrl.tune.spec import load_sweep

    said, started = [], []
    monkeypatch.setattr(stages, "ensure_pretrained", lambda ctx, spec, methods: [
        {"method": m, "seed": 42, "error": "TrainingDiverged: loss became nan"} for m in methods])
    monkeypatch.setattr(stages, "evaluate",
                        lambda ctx, spec, pretrained, chosen, encoders=None: started.extend(spec.cells) or [])
    ctx = stages.Context(storage=str(tmp_path), run_id="r", dataset=DatasetInfo("synthetic", "/d", "f" * 64, 100),
                         cpus=1, gpus=0, max_concurrent=None, resume=False, say=said.append)
    spec = load_sweep("scarcity", "smoke")
    assert spec.pretrain_methods == ("simclr", "masked")
    res = runner._stages(ctx, spec, load_sweep("pretrain", "smoke"), {"run_id": "r", "stages": {}}, tmp_path)
    assert {c.track for c in started} == {"supervised", "random_frozen"}  # the SSL tracks never started
    n_method = 2 * 2 * len(spec.seeds)  # ssl_finetune, ssl_frozen x 2 fractions x seeds, per method
    assert (res["n_runs"], res["n_failed"], res["n_skipped"]) == (2 * n_method,) * 3
    for cell in res["cells"]:
        assert cell["track"] in ("ssl_finetune", "ssl_frozen") and cell["seeds"] == []
        assert [f["error"] for f in cell["failed"]] == [
            f"skipped: pretraining {cell['method']} failed: TrainingDiverged: loss became nan"] * len(spec.seeds)
    assert [ln.split(" trials of ")[0] for ln in said] == [f"SKIPPED {n_method}"] * 2
    assert said[0].startswith("SKIPPED 8 trials of ssl_finetune[simclr]@0.25, ssl_frozen[simclr]@0.25, ")
    assert "loss became nan" in said[0] and "[masked]" in said[1] and "[simclr]" not in said[1]

    # one method failed: only its cells are skipped; the other method's SSL tracks start with its encoder
    said.clear(), started.clear()
    monkeypatch.setattr(stages, "ensure_pretrained", lambda ctx, spec, methods: [
        {"method": "simclr", "seed": 42, "uri": "file:///s"}, {"method": "masked", "seed": 42, "error": "boom"}])
    res = runner._stages(ctx, spec, load_sweep("pretrain", "smoke"), {"run_id": "r", "stages": {}}, tmp_path)
    assert {(c.track, c.method) for c in started} == {("supervised", ""), ("random_frozen", ""),
                                                      ("ssl_finetune", "simclr"), ("ssl_frozen", "simclr")}
    assert res["n_skipped"] == n_method and {c.get("method") for c in res["cells"]} == {"masked"}
    assert res["pretraining"]["methods"] == ["simclr", "masked"]


# --- --dry-run -----------------------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_dry_run_prints_the_plan_and_starts_and_writes_nothing(launch, monkeypatch, tmp_path, synth_root, capsys):
    import ray

    from ssrl.tune.spec import load_sweep

    def refuse(*args, **kwargs):
        raise AssertionError("--dry-run started Ray")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setenv("SSRL_CACHE_DIR", str(tmp_path / "cache"))  # synthetic data would be generated here
    monkeypatch.delenv("SSRL_DATA_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./data/PTB-XL: the default is the synthetic data
    (tmp_path / "runs" / "scarcity").mkdir(parents=True)
    (tmp_path / "runs" / "scarcity" / "results.json").write_text('{"earlier": true}')
    before = _tree(tmp_path)
    assert launch.main(["--sweep", "scarcity", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert _tree(tmp_path) == before and not (tmp_path / "cache").exists()
    assert "scale demo (the default on synthetic data: no PTB-XL found)" in plan
    pre, demo = load_sweep("pretrain", "demo"), load_sweep("scarcity", "demo")
    assert f"pretrain 2 trials (simclr, masked x seeds {list(pre.seeds)}), {pre.train['epochs']} epochs, " in plan
    assert re.search(r"^search   off", plan, re.M)
    n = len(demo.cells)
    assert f"eval     {n * 3} trials ({n} groups x seeds [42, 52, 62]), up to {demo.train['epochs']} epochs" in plan
    assert "records written on the first run" in plan and "runs/logs/" in plan

    assert launch.main(["--sweep", "fewshot", "--scale", "smoke", "--data-root", str(synth_root), "--dry-run",
                        "--cpus-per-trial", "2"]) == 0
    plan = capsys.readouterr().out
    s, g = load_sweep("fewshot", "smoke").search, len(load_sweep("fewshot", "smoke").searched_cells)
    assert re.search(rf"^search   {g * s.samples_per_group} trials \({s.samples_per_group} per group x {g} groups\), "
                     rf"up to {s.epochs} epochs, ASHA grace {s.grace_period} .* 2 CPUs, 0 GPUs per trial$", plan, re.M), plan
    assert "400 records at 100 Hz" in plan and _tree(tmp_path) == before


# --- the smoke sweep as a user runs it: a subprocess without a terminal ------------------------------


@pytest.mark.e2e
def test_smoke_sweep_console_without_a_terminal(edited_sweeps, synth_root, cache_dir, tmp_path):
    """One track is made to diverge: 4 of 24 trials fail, each as one line; the console stays short and plain,
    ends with the table and where everything is, and the exit code is 1. Ray's own output is in the log."""
    sweeps = edited_sweeps(scarcity={"scales.smoke.track_train": {"random_frozen": {"lr": 1.0e30}},
                                     "scales.smoke.resources.max_failures": 0})
    out = tmp_path / "runs"
    proc = launch_smoke_scarcity(sweeps, synth_root, cache_dir, out)
    text = proc.stdout + proc.stderr
    lines = text.splitlines()
    assert proc.returncode == 1, text[-3000:]
    assert len(lines) <= 60 and not CONTROL.search(text), text
    failed = [ln for ln in lines if ln.startswith("FAILED ")]
    assert len(failed) == 4 and all(re.fullmatch(r"FAILED eval random_frozen@(0\.25|1\.0) seed (42|52): .*"
                                                  r"loss became nan.* \(traceback: (\S+/error\.txt)\)", ln)
                                    for ln in failed), failed
    for ln in failed:
        assert Path(re.search(r"\(traceback: (\S+)\)$", ln).group(1)).exists()
    assert "| track " in text and "24 runs, 4 failed" in text
    for name in ("results.json", "results.md", "scarcity.png"):
        path = out / "scarcity" / name
        assert path.exists() and str(path) in text
    assert f"ui --backend-store-uri sqlite:///{out}/mlflow.db --host 127.0.0.1" in text
    (log,) = (out / "logs").glob("scarcity-*.log")
    assert str(log) in text and "Checkpoint successfully created" in log.read_text()
    assert "TrainingDiverged" in log.read_text()  # the workers' tracebacks are kept
    assert "Checkpoint successfully" not in text and "Trial status" not in text
