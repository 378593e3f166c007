"""Every trial records the precision it ran at: results.json rows and the MLflow run (tag and param)."""

from __future__ import annotations

import torch
from mlflow.tracking import MlflowClient

from ssrl.train.precision import resolve_precision


def test_smoke_scarcity_records_each_trials_precision(smoke_runs):
    results = smoke_runs.results["scarcity"]
    trains = resolve_precision("auto", torch.device("cpu"))  # what 'auto' is on this CPU
    want = {"supervised": trains, "ssl_finetune": trains, "ssl_frozen": "fp32", "random_frozen": "fp32"}
    rows = [dict(r, track=c["track"]) for c in results["cells"] for r in c["per_seed"]]
    assert rows and all(r["precision"] == want[r["track"]] for r in rows)
    assert results["precision"] == {"requested": "auto", "used": sorted(set(want.values()))}

    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_runs.out}/mlflow.db")
    exp = client.get_experiment_by_name("ssrl-scarcity")
    runs = client.search_runs([exp.experiment_id], f"tags.ssrl_run = '{results['run_id']}' and tags.stage = 'eval'",
                              max_results=1000)
    assert len(runs) == len(rows)
    for run in runs:
        track = run.data.tags["track"]
        assert run.data.tags["precision"] == run.data.params["precision_used"] == want[track]
        assert run.data.params.get("precision", "auto") == "auto"  # the setting (a param once a sweep sets it)
