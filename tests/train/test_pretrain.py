"""Pretraining: losses fall, checkpoints are complete, and SSL learns something real."""

from __future__ import annotations

import json

import pytest
import torch

from ssrl.train import BEST, LAST, load_encoder, pretrain, read_checkpoint


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_pretrain_reports_and_checkpoints(pt_cfg, tmp_path, method):
    seen = []
    final = pretrain(pt_cfg(method=method, epochs=3), seen.append, tmp_path)
    assert [m["epoch"] for m in seen] == [1, 2, 3]
    assert all("probe_score" in m for m in seen)
    assert final["done"] and (tmp_path / BEST).exists() and (tmp_path / LAST).exists()
    blob = read_checkpoint(tmp_path / BEST)
    assert json.loads(blob["config"])["method"] == method
    enc = load_encoder(tmp_path / LAST, expect="cnn6", expect_kwargs={"width": 8})
    assert enc(torch.randn(2, 12, 1000)).shape == (2, enc.out_dim)


def test_pretrain_same_seed_same_numbers(pt_cfg, tmp_path):
    a, b = [], []
    pretrain(pt_cfg(), a.append, tmp_path / "a")
    pretrain(pt_cfg(), b.append, tmp_path / "b")
    assert a == b


def test_pretraining_beats_random_encoder_on_probe(pt_cfg, tmp_path):
    """On data built for it, SimCLR features must probe better than the random init."""
    seen = []
    pretrain(pt_cfg(epochs=8, max_pool=320, probe_every=8, probe_size=300, encoder_width=16, lr=3e-3), seen.append,
             tmp_path)
    assert seen[-1]["probe_score"] > seen[-1]["probe_at_init"] + 0.02
