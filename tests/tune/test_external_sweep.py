"""`pretrained:` in sweep files: encoders pretrained elsewhere beside the methods pretrained here, paired."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ssrl.errors import USER_ERRORS
from ssrl.models import build_encoder
from ssrl.tune.spec import SweepError, load_sweep

LEADS3 = ["II", "V1", "I"]


def _trained_cnn6() -> torch.nn.Module:
    """A cnn6 (width 8, three leads) trained a few steps on 5 s windows at 500 Hz."""
    torch.manual_seed(0)
    enc = build_encoder("cnn6", in_leads=3, width=8)
    opt = torch.optim.SGD(enc.parameters(), lr=0.1)
    for _ in range(3):
        loss = (enc(torch.randn(4, 3, 2500)) - 1.0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return enc


@pytest.fixture
def weights(tmp_path) -> dict[str, Path]:
    """The encoder as safetensors with a 'module.' prefix and as a .pt state_dict."""
    enc = _trained_cnn6()
    files = {"st": tmp_path / "fm.safetensors", "pt": tmp_path / "fm.pt"}
    save_file({f"module.{k}": v.contiguous() for k, v in enc.state_dict().items()}, str(files["st"]))
    torch.save(enc.state_dict(), files["pt"])
    return files


def _entries(weights: dict[str, Path]) -> list[dict]:
    common = {"encoder": "cnn6", "kwargs": {"width": 8}, "sampling_rate": 500, "seconds": 5, "leads": LEADS3}
    return [{**common, "name": "fm_st", "weights": str(weights["st"]), "key_prefix": "module.", "normalise": "per_lead"},
            {**common, "name": "fm_pt", "weights": str(weights["pt"]), "normalise": "global"}]


def test_a_fewshot_sweep_of_external_encoders_only_needs_no_pretraining(edited_sweeps, weights):
    from ssrl.tune.options import LaunchOptions, specs

    sweeps = edited_sweeps(fewshot={"scales.smoke.pretrain_methods": [], "pretrained": _entries(weights)})
    spec = load_sweep("fewshot", "smoke", sweeps)
    groups = {c.group for c in spec.cells}
    assert {"ssl[fm_st]@N10", "ssl[fm_pt]@N10", "hybrid[fm_st]@N10", "scratch@N10"} <= groups
    assert not any("simclr" in g for g in groups) and spec.compared_methods == ("fm_st", "fm_pt")
    assert not spec.needs_pretraining
    assert specs(LaunchOptions(sweep="fewshot", scale="smoke", sweeps_dir=str(sweeps)), "smoke")[1] is None
    cfg = spec.finetune_config(spec.cell("ssl[fm_st]@N10"))
    assert (cfg.encoder, cfg.encoder_width) == ("cnn6", 0)  # its kwargs travel in the checkpoint


@pytest.mark.parametrize("entry,msg", [
    ({"leads": ["I", "V9"]}, "V9"),
    ({"name": "simclr"}, "names of SSL methods"),
    ({"normalise": "zscore"}, "normalise 'zscore'"),
])
def test_a_bad_entry_fails_when_the_sweep_file_is_read(edited_sweeps, weights, entry, msg):
    sweeps = edited_sweeps(scarcity={"pretrained": [{**_entries(weights)[0], **entry}]})
    with pytest.raises(SweepError, match=msg):
        load_sweep("scarcity", "smoke", sweeps)


def test_scarcity_smoke_pairs_external_encoders_with_a_method_pretrained_here(edited_sweeps, weights, ray_session,
                                                                             synth_root, cache_dir, tmp_path, capfd):
    """Both files (safetensors with a prefix, .pt; 500 Hz, 5 s, three leads) beside simclr, on the same seeds;
    results.json, MLflow and the console name each file's sha256. A bad file then stops a run before Ray with
    one line and leaves the results intact."""
    from mlflow.tracking import MlflowClient

    from ssrl.tune.runner import LaunchOptions, run_sweep

    sweeps = edited_sweeps(scarcity={"pretrain_methods": ["simclr"], "pretrained": _entries(weights),
                                     "tracks": ["supervised", "ssl_finetune", "ssl_frozen"],
                                     "track_train": {"ssl_frozen": {"lr": 0.01}},
                                     "scales.smoke.fractions": [1.0]},
                           pretrain={"scales.smoke.methods": ["simclr"]})
    out = tmp_path / "runs"
    opts = LaunchOptions(sweep="scarcity", scale="smoke", data_root=str(synth_root), out=str(out),
                         storage=str(tmp_path / "storage"), sweeps_dir=str(sweeps), max_concurrent=2)
    res = run_sweep(opts)
    assert res["n_failed"] == 0
    sha = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in weights.items()}
    assert [(e["name"], e["sha256"], e["weights"]) for e in res["pretrained"]] == [
        ("fm_st", sha["st"], str(weights["st"])), ("fm_pt", sha["pt"], str(weights["pt"]))]
    assert res["pretrained"][0]["input"] == {"sampling_rate": 500, "seconds": 5, "leads": LEADS3,
                                             "normalise": "per_lead"}
    cells = {(c["track"], c.get("method")): c for c in res["cells"]}
    assert set(cells) == {("supervised", None)} | {(t, m) for t in ("ssl_finetune", "ssl_frozen")
                                                   for m in ("simclr", "fm_st", "fm_pt")}
    for (_track, method), cell in cells.items():
        assert cell["seeds"] == [42, 52]
        if method == "fm_pt":  # paired by seed with every encoder listed before it
            assert {m: d["n_pairs"] for m, d in cell["between_methods"].items()} == {"simclr": 2, "fm_st": 2}
            assert cell["vs_supervised"]["n_pairs"] == 2
    assert "| ssl_finetune[fm_st]" in (out / "scarcity" / "results.md").read_text()

    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    exp = client.get_experiment_by_name("ssrl-scarcity")
    parent = client.search_runs([exp.experiment_id], "tags.stage = 'parent'")[0]
    assert json.loads(parent.data.tags["pretrained.fm_st"])["sha256"] == sha["st"]
    evals = client.search_runs([exp.experiment_id], "tags.stage = 'eval'", max_results=100)
    assert {r.data.tags.get("weights_sha256") for r in evals if r.data.tags.get("method") == "fm_pt"} == {sha["pt"]}
    header = capfd.readouterr().out
    assert f"fm_pt: {weights['pt']} sha256 {sha['pt'][:16]}" in header and "500 Hz, 5 s, leads II,V1,I" in header

    before = (out / "scarcity" / "results.json").read_bytes()
    cut = weights["st"].read_bytes()
    torch.save({"features.0.weight": torch.zeros(1), "x": _RunsCode()}, weights["pt"])
    weights["st"].write_bytes(cut[: len(cut) // 2])
    for msg in ("fm.safetensors: not a readable safetensors file, truncated", "fm.pt: refused: this pickle carries code"):
        with pytest.raises(USER_ERRORS, match=msg) as info:
            run_sweep(opts)
        assert "\n" not in str(info.value)
        weights["st"].write_bytes(cut)  # the next run reaches the second entry
    assert (out / "scarcity" / "results.json").read_bytes() == before


class _RunsCode:
    """A pickle that would run a command when loaded without weights_only."""

    def __reduce__(self):
        return print, ("this ran",)


def test_fewshot_smoke_runs_external_encoders_alone_paired_with_scratch(edited_sweeps, weights, ray_session,
                                                                         synth_root, tmp_path):
    """The few-shot benchmark with only encoders pretrained elsewhere (no pretraining stage): fine-tuned
    (`ssl`) and as frozen embeddings beside the heart-rate features (`hybrid`), every cell on the same seeds
    and subsets as `scratch`, paired with it and with each other, the files' sha256 in results.json."""
    from ssrl.tune.runner import LaunchOptions, run_sweep

    conditions = [{"track": "scratch", "n": 10}, {"track": "ssl", "n": 10}, {"track": "hybrid", "n": 10}]
    sweeps = edited_sweeps(fewshot={"scales.smoke.pretrain_methods": [], "pretrained": _entries(weights),
                                    "scales.smoke.conditions": conditions})
    out = tmp_path / "runs"
    res = run_sweep(LaunchOptions(sweep="fewshot", scale="smoke", data_root=str(synth_root), out=str(out),
                                  storage=str(tmp_path / "storage"), sweeps_dir=str(sweeps), max_concurrent=2))
    assert res["n_failed"] == 0 and res["n_skipped"] == 0
    sha = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in weights.items()}
    assert [(e["name"], e["sha256"]) for e in res["pretrained"]] == [("fm_st", sha["st"]), ("fm_pt", sha["pt"])]
    cells = {(c["track"], c.get("method")): c for c in res["cells"]}
    assert set(cells) == {("scratch", None)} | {(t, m) for t in ("ssl", "hybrid") for m in ("fm_st", "fm_pt")}
    assert all(c["seeds"] == [42, 52] for c in cells.values())
    for m in ("fm_st", "fm_pt"):
        assert cells["ssl", m]["vs_scratch"]["n_pairs"] == 2
    assert {k: d["n_pairs"] for k, d in cells["ssl", "fm_pt"]["between_methods"].items()} == {"fm_st": 2}
