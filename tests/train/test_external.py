"""Encoders pretrained elsewhere: safe loading, one-line errors for every bad file, and the trial's rebuild."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ssrl.config import ConfigError, PretrainedEntry
from ssrl.models import build_encoder
from ssrl.models.adapter import InputAdapter
from ssrl.train.checkpoint import CheckpointError
from ssrl.train.external import load_external, save_external

LEADS3 = ("II", "V1", "I")  # a subset, in the encoder's own order


def trained_cnn6(in_leads: int = 3, steps: int = 3) -> torch.nn.Module:
    """A cnn6 (width 8) trained a few steps at 500 Hz on 5 s windows: weights no fresh init has."""
    torch.manual_seed(0)
    enc = build_encoder("cnn6", in_leads=in_leads, width=8)
    opt = torch.optim.SGD(enc.parameters(), lr=0.1)
    for _ in range(steps):  # embed 5 s at 500 Hz; pull the embedding towards a fixed direction
        h = enc(torch.randn(4, in_leads, 2500))
        loss = (h - 1.0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return enc


def entry(weights: Path, **kw) -> PretrainedEntry:
    base = dict(name="myfm", encoder="cnn6", kwargs={"width": 8}, weights=str(weights), key_prefix="module.",
                sampling_rate=500, seconds=5, leads=LEADS3, normalise="per_lead")
    return PretrainedEntry(**{**base, **kw})


@pytest.fixture
def saved(tmp_path):
    """The trained encoder as safetensors with a 'module.' prefix (plus a head to leave out) and as a .pt."""
    enc = trained_cnn6()
    state = {f"module.{k}": v.contiguous() for k, v in enc.state_dict().items()}
    state["head.weight"] = torch.zeros(2, 32)
    save_file(state, str(tmp_path / "enc.safetensors"))
    torch.save({"state_dict": enc.state_dict(), "epoch": 3}, tmp_path / "enc.pt")
    return enc, tmp_path


def one_line_error(exc_type, fn):
    with pytest.raises(exc_type) as info:
        fn()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_safetensors_with_a_prefix_and_a_pt_state_dict_load_the_same_weights(saved):
    enc, tmp = saved
    for weights, prefix in ((tmp / "enc.safetensors", "module."), (tmp / "enc.pt", "")):
        loaded = load_external(entry(weights, key_prefix=prefix), data_rate=100, record_samples=1000)
        got = loaded.encoder.state_dict()
        assert all(torch.equal(got[k], v) for k, v in enc.state_dict().items())
        assert loaded.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
        record = loaded.record()
        assert record["sha256"] == loaded.sha256 and record["weights"] == str(weights.resolve())
        assert record["input"] == {"sampling_rate": 500, "seconds": 5, "leads": list(LEADS3), "normalise": "per_lead"}
    assert load_external(entry(tmp / "enc.safetensors"), 100, 1000).n_ignored == 1  # the head outside the prefix


def test_a_trial_rebuilds_the_published_encoder_behind_its_contract(saved, ft_cfg, tmp_path):
    from ssrl.data import open_ptbxl
    from ssrl.train.common import build_track_encoder

    enc, tmp = saved
    published = tmp_path / "encoder_best.pt"
    save_external(published, load_external(entry(tmp / "enc.safetensors"), 100, 1000))
    cfg = ft_cfg(track="ssl_finetune", pretrained=str(published), encoder="cnn6", encoder_width=0)
    data = open_ptbxl(cfg.data_root, cfg.sampling_rate, cfg.cache_dir)
    model = build_track_encoder(cfg, data)
    assert isinstance(model, InputAdapter) and (model.up, model.down, model.samples) == (5, 1, 2500)
    assert model.lead_index.tolist() == [1, 6, 0]
    assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in enc.state_dict().items())
    x = torch.randn(2, 12, 1000)
    assert model.eval()(x).shape == (2, enc.out_dim)


def test_a_checkpoint_pretrained_here_can_be_named_without_its_encoder(pretrained_ckpt):
    from ssrl.train import read_checkpoint

    loaded = load_external(PretrainedEntry(name="mine", weights=str(pretrained_ckpt), sampling_rate=100,
                                           normalise="dataset"), 100, 1000)
    blob = read_checkpoint(pretrained_ckpt)
    assert loaded.encoder_name == blob["encoder"] and len(loaded.leads) == 12
    assert all(torch.equal(loaded.encoder.state_dict()[k], v) for k, v in blob["state_dict"].items())


def test_missing_and_truncated_files(saved):
    _, tmp = saved
    msg = one_line_error(CheckpointError, lambda: load_external(entry(tmp / "none.safetensors"), 100, 1000))
    assert "not found" in msg
    for name in ("enc.safetensors", "enc.pt"):
        data = (tmp / name).read_bytes()
        cut = tmp / f"cut{Path(name).suffix}"
        cut.write_bytes(data[: len(data) // 2])
        msg = one_line_error(CheckpointError, lambda cut=cut: load_external(entry(cut, key_prefix=""), 100, 1000))
        assert str(cut) in msg and "truncated" in msg


def test_keys_that_do_not_match_are_listed(saved):
    enc, tmp = saved
    state = {k: v for k, v in enc.state_dict().items() if not k.startswith("features.0.")}
    state["proj.weight"] = torch.zeros(3)
    torch.save(state, tmp / "keys.pt")
    msg = one_line_error(CheckpointError, lambda: load_external(entry(tmp / "keys.pt", key_prefix=""), 100, 1000))
    assert "missing: features.0.weight" in msg and "unexpected: proj.weight" in msg
    msg = one_line_error(CheckpointError, lambda: load_external(entry(tmp / "enc.safetensors", key_prefix="enc."),
                                                                100, 1000))
    assert "no key starts with key_prefix 'enc.'" in msg


def test_shapes_that_differ_are_listed(saved):
    _, tmp = saved  # the encoder built for 12 leads, the weights made for 3
    msg = one_line_error(CheckpointError, lambda: load_external(entry(tmp / "enc.pt", key_prefix="", leads=()),
                                                                100, 1000))
    assert "shapes differ: features.0.weight (file [8, 3, 11], encoder [8, 12, 11])" in msg


class _RunsCode:
    def __reduce__(self):
        return os.system, (f"touch {os.environ['SSRL_TEST_MARKER']}",)


def test_a_pickle_that_carries_code_is_refused_without_running_it(tmp_path, monkeypatch):
    marker = tmp_path / "code-ran"
    monkeypatch.setenv("SSRL_TEST_MARKER", str(marker))
    torch.save({"features.0.weight": torch.zeros(1), "x": _RunsCode()}, tmp_path / "evil.pt")
    msg = one_line_error(CheckpointError, lambda: load_external(entry(tmp_path / "evil.pt", key_prefix=""), 100, 1000))
    assert "refused: this pickle carries code" in msg
    assert not marker.exists()


def test_unknown_lead_and_too_long_a_window(saved):
    _, tmp = saved
    msg = one_line_error(ConfigError, lambda: load_external(entry(tmp / "enc.pt", leads=("II", "V7", "I")), 100, 1000))
    assert "V7" in msg and "aVR" in msg
    msg = one_line_error(ConfigError, lambda: load_external(entry(tmp / "enc.pt", seconds=12), 100, 1000))
    assert "seconds 12 is longer than the records (10 s at 100 Hz)" in msg


@pytest.mark.parametrize("raw,msg", [
    ({"name": "x", "weights": "a.bin", "sampling_rate": 500, "normalise": "none"}, "must end in"),
    ({"name": "x", "weights": "a.pt", "sampling_rate": 500, "normalise": "zscore"}, "normalise 'zscore'"),
    ({"name": "x", "weights": "a.pt", "normalise": "none"}, "missing sampling_rate"),
    ({"name": "x", "weights": "a.pt", "sampling_rate": 500, "normalise": "none", "lr": 1}, "unknown setting"),
    ({"name": "x y", "weights": "a.pt", "sampling_rate": 500, "normalise": "none"}, "pretrained name"),
])
def test_an_entry_with_a_bad_field_is_refused(raw, msg):
    assert msg in one_line_error(ConfigError, lambda: PretrainedEntry.from_raw(raw))
