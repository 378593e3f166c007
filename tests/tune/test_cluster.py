"""A sweep on a two-node Ray cluster (ray.cluster_utils.Cluster) that loses its worker node mid-trial.

One cluster serves both checks: trials run on both nodes, a fine-tune on the worker node fetches the
pretrained encoder from the run storage, and when the worker node is killed without grace the trial it
was running resumes from its last checkpoint on the head node; the sweep completes, results.json and
MLflow hold every trial once. The cluster cannot share a process with the session's local Ray, so this
file is also the script the test runs in a subprocess (`python test_cluster.py WORK DATA`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SEEDS = [42, 52]  # two trials, one per node (1 CPU each)
KILL_AT_EPOCH = 2  # the worker's trial is killed once it has reported (and checkpointed) this epoch


def _rows(experiment: Path) -> dict[str, list[dict]]:
    """Every trial's results so far: {trial dir name: [result, ...]} (a line being written is skipped)."""
    out = {}
    for path in experiment.glob("*/result.json"):
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
        out[path.parent.name] = rows
    return out


def _sweeps(dest: Path) -> Path:
    """sweeps/ with a smoke scarcity of one SSL track, four seeds and epochs long enough to be cut."""
    import yaml

    dest.mkdir(parents=True, exist_ok=True)
    for src in (REPO / "sweeps").glob("*.yaml"):
        raw = yaml.safe_load(src.read_text())
        if src.stem == "scarcity":
            raw["track_train"] = {}
            smoke = raw["scales"]["smoke"]
            smoke.update(tracks=["ssl_finetune"], fractions=[1.0], seeds=SEEDS, pretrain_methods=["simclr"])
            smoke["train"].update(epochs=8, patience=8)
            smoke["resources"].update(max_failures=2)
        if src.stem == "pretrain":
            raw["scales"]["smoke"]["methods"] = ["simclr"]
        (dest / src.name).write_text(yaml.safe_dump(raw))
    return dest


def _publish_pretrained(storage: Path, sweeps: Path, data: str) -> None:
    """A finished SimCLR pretraining in storage (as an earlier sweep leaves it), for the sweep to reuse."""
    from ssrl.config import to_dict
    from ssrl.models import build_encoder, encoder_kwargs
    from ssrl.train import HANDED_ON, save_encoder
    from ssrl.tune import stages
    from ssrl.tune.dataset import open_dataset
    from ssrl.tune.spec import load_sweep

    pre = load_sweep("pretrain", "smoke", sweeps)
    dataset = open_dataset(Path(data).resolve(), 100)
    cfg = stages.pretrain_config(pre, "simclr", pre.seeds[0], dataset)
    uri = Path(stages.pretrained_uri(str(storage), cfg, dataset.fingerprint))
    kwargs = encoder_kwargs(cfg.encoder_width)
    save_encoder(uri / HANDED_ON, build_encoder(cfg.encoder, **kwargs), cfg.encoder, kwargs, to_dict(cfg))
    (uri / "metrics.json").write_text("{}")
    (uri / "DONE").write_text("ok\n")


def cluster_main(work: Path, data: str) -> None:
    """Start a head and a worker node (1 CPU each), run the sweep, kill the worker mid-trial, report."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="ssrl-cl-", dir="/tmp"))  # Ray's socket paths stay short
    (ray_tmp / "ray").mkdir()
    os.environ["RAY_TMPDIR"] = str(ray_tmp)  # also where Cluster notes its address, not /tmp/ray
    import ray
    from ray.cluster_utils import Cluster

    from ssrl.tune.runner import LaunchOptions, run_sweep

    head_tmp, worker_tmp = work / "head-tmp", work / "worker-tmp"  # each node's own local scratch
    head_tmp.mkdir()
    worker_tmp.mkdir()
    fast_death = {"health_check_period_ms": 1000, "health_check_timeout_ms": 1000,
                  "health_check_failure_threshold": 3, "health_check_initial_delay_ms": 1000}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "temp_dir": str(ray_tmp), "env_vars": {"TMPDIR": str(head_tmp)},
        "_system_config": fast_death, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1, env_vars={"TMPDIR": str(worker_tmp)})
    ray.init(address=cluster.address, log_to_driver=False)
    storage, sweeps = work / "storage", _sweeps(work / "sweeps")
    _publish_pretrained(storage, sweeps, data)
    info: dict = {"head": cluster.head_node.node_id, "worker": worker.node_id}
    stop = threading.Event()

    def kill_worker_mid_trial() -> None:
        while not stop.wait(0.2):
            rows = {}
            for exp in storage.glob("scarcity-*-eval"):
                rows.update(_rows(exp))
            running = [n for n, r in rows.items() if r and r[-1].get("node_id") == info["worker"]
                       and not r[-1].get("done") and r[-1].get("epoch", 0) >= KILL_AT_EPOCH]
            if running:
                info.update(killed=running[0], killed_after_epoch=rows[running[0]][-1]["epoch"])
                cluster.remove_node(worker, allow_graceful=False)
                return

    watcher = threading.Thread(target=kill_worker_mid_trial, daemon=True)
    watcher.start()
    try:
        res = run_sweep(LaunchOptions(sweep="scarcity", scale="smoke", data_root=data, out=str(work / "out"),
                                      storage=str(storage), address=cluster.address,
                                      sweeps_dir=str(sweeps)))
    finally:
        stop.set()
        watcher.join()
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    info["results"] = res
    info["worker_fetched"] = sorted(str(p.relative_to(worker_tmp)) for p in worker_tmp.rglob("encoder_best.pt"))
    (work / "summary.json").write_text(json.dumps(info))


@pytest.mark.e2e
@pytest.mark.slow
def test_two_node_cluster_survives_losing_its_worker(synth_root, cache_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    proc = subprocess.run([sys.executable, __file__, str(tmp_path), str(synth_root)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    info = json.loads((tmp_path / "summary.json").read_text())
    res, head, worker = info["results"], info["head"], info["worker"]
    assert "killed" in info, "no trial on the worker node lived long enough to be killed"

    # the sweep completed: every seed of the cell, nothing failed
    assert (res["n_runs"], res["n_failed"]) == (len(SEEDS), 0)
    (cell,) = res["cells"]
    assert cell["track"] == "ssl_finetune" and cell["seeds"] == SEEDS

    (experiment,) = (tmp_path / "storage").glob("scarcity-*-eval")
    rows = _rows(experiment)
    assert len(rows) == len(SEEDS) and all(r[-1]["done"] for r in rows.values())
    nodes = {name: [r["node_id"] for r in trial] for name, trial in rows.items()}
    # trials ran on both nodes; the one on the worker had fetched the encoder from storage into its own scratch
    assert {n for trial in nodes.values() for n in trial} == {head, worker}
    assert any(set(trial) == {head} for trial in nodes.values())
    assert [Path(f).parts[0] for f in info["worker_fetched"]] == ["ssrl-pretrained"]

    # the killed trial went on on the head node from its checkpoint, not from epoch 1
    killed = rows[info["killed"]]
    first_on_head = next(i for i, r in enumerate(killed) if r["node_id"] == head)
    assert all(r["node_id"] == worker for r in killed[:first_on_head])
    assert killed[first_on_head - 1]["epoch"] >= KILL_AT_EPOCH
    assert killed[first_on_head]["epoch"] > 1
    assert killed[first_on_head]["iterations_since_restore"] == 1  # Tune restored it, from a checkpoint
    assert killed[-1]["done"] and killed[-1]["node_id"] == head

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out'}/mlflow.db")
    exp = client.get_experiment_by_name("ssrl-scarcity")
    runs = client.search_runs([exp.experiment_id], max_results=100,
                              filter_string=f"tags.ssrl_run = '{res['run_id']}' and tags.stage = 'eval'")
    assert len(runs) == len(SEEDS) and len({r.data.tags["trial_key"] for r in runs}) == len(SEEDS)
    assert all(r.info.status == "FINISHED" for r in runs)


if __name__ == "__main__":
    cluster_main(Path(sys.argv[1]), sys.argv[2])
