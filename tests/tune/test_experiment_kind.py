"""MLflow 3's UI opens our experiments in its model-training view: they carry the experiment-kind tag."""

from __future__ import annotations

from ssrl.tune.tracking import EXPERIMENT_TAGS, Tracker, connect

KIND = "mlflow.experimentKind"


def test_experiments_are_tagged_for_the_model_training_view(tmp_path):
    client = connect(f"sqlite:///{tmp_path}/mlflow.db")
    assert EXPERIMENT_TAGS == {KIND: "custom_model_development"}
    Tracker(client, "ssrl-scarcity", "r1", None, {"sweep": "scarcity"}).close([])
    assert client.get_experiment_by_name("ssrl-scarcity").tags[KIND] == "custom_model_development"

    old = client.create_experiment("ssrl-fewshot")  # made before the tag existed: tagged when used again
    assert KIND not in client.get_experiment(old).tags
    Tracker(client, "ssrl-fewshot", "r2", None, {"sweep": "fewshot"}).close([])
    assert client.get_experiment(old).tags[KIND] == "custom_model_development"

    chosen = client.create_experiment("ssrl-pretrain", tags={KIND: "genai_development"})  # the user's choice stays
    Tracker(client, "ssrl-pretrain", "r3", None, {"sweep": "pretrain"}).close([])
    assert client.get_experiment(chosen).tags[KIND] == "genai_development"
