"""Pretraining: losses fall, checkpoints are complete, and SSL learns something real."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssrl.augment import build_augment
from ssrl.data import open_ptbxl, task_labels
from ssrl.models import build_encoder
from ssrl.train import HANDED_ON, LAST, load_encoder, pretrain, read_checkpoint
from ssrl.train.loop import Signals


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_pretrain_reports_and_checkpoints(pt_cfg, tmp_path, method):
    seen = []
    final = pretrain(pt_cfg(method=method, epochs=3), seen.append, tmp_path)
    assert [m["epoch"] for m in seen] == [1, 2, 3]
    assert all("probe_score" in m for m in seen)
    assert final["done"] and (tmp_path / HANDED_ON).exists() and (tmp_path / LAST).exists()
    blob = read_checkpoint(tmp_path / HANDED_ON)
    assert json.loads(blob["config"])["method"] == method
    enc = load_encoder(tmp_path / LAST, expect="cnn6", expect_kwargs={"width": 8})
    assert enc(torch.randn(2, 12, 1000)).shape == (2, enc.out_dim)


def test_pretrain_same_seed_same_numbers(pt_cfg, tmp_path):
    a, b = [], []
    pretrain(pt_cfg(), a.append, tmp_path / "a")
    pretrain(pt_cfg(), b.append, tmp_path / "b")
    assert a == b


def _view_retrieval(encoder, x: torch.Tensor, seed: int) -> float:
    """Share of records whose first augmented view finds its own second view as nearest (cosine) neighbour."""
    gen, augment = torch.Generator().manual_seed(seed), build_augment("simclr", 100)
    encoder.eval()
    with torch.no_grad():
        z1 = F.normalize(encoder(augment(x, gen)), dim=1)  # (n, D)
        z2 = F.normalize(encoder(augment(x, gen)), dim=1)
    return (z1 @ z2.T).argmax(1).eq(torch.arange(len(x))).float().mean().item()


def test_pretraining_learns_features_that_hold_on_unseen_records(pt_cfg, synth_root, cache_dir, tmp_path):
    """SimCLR must learn what its objective asks on records it never saw (val and test folds).

    With the rate-keeping views (crop without resizing), measured on an AVX-512 (bf16) CPU over seeds 0-2:
    a random cnn6 retrieves 31-45 % of views, 8 SimCLR epochs 60-64 % (gains 0.16-0.29; seed 0: +0.21).
    Pinned to fp32 (under `auto` it followed the CPU); in fp32 on a 2-core AVX2 AMD EPYC (no native bf16) over
    seeds 0-2 of pretraining and random init, on the 80 held-out records: random 31-45 %, trained 59-65 %,
    gains 0.16, 0.20, 0.33 (seed 0, the one run here: +0.16, 13 records). The threshold, 0.10 (8 records), is
    38 % below the smallest gain measured, so it stays.
    The resizing views gave 39-54 % and 73-88 % on AVX2 and AVX-512 CPUs. A label probe was the old check; on this synthetic data a random encoder
    already probes at 0.80-0.92 AUROC and the gain (-0.03 to +0.06) is within the val fold's noise.
    """
    data = open_ptbxl(synth_root, 100, cache_dir)
    labels = task_labels(data, "superdiagnostic")
    rows = np.concatenate([labels.split("val").rows, labels.split("test").rows])
    x = Signals(data, rows, torch.device("cpu")).get(torch.arange(len(rows)))  # (n, 12, T) held out
    torch.manual_seed(0)
    random_score = _view_retrieval(build_encoder("cnn6", in_leads=12, width=16), x, seed=5)
    pretrain(pt_cfg(epochs=8, max_pool=320, probe_every=0, encoder_width=16, lr=3e-3, precision="fp32"),
             lambda m: None, tmp_path)
    trained = load_encoder(tmp_path / LAST, expect="cnn6", expect_kwargs={"width": 16})
    assert _view_retrieval(trained, x, seed=5) > random_score + 0.10


def _without_labels(root, dest):
    """A copy of a PTB-XL tree (record files hard-linked) whose every scp_codes cell is empty: no labels."""
    import os
    import shutil

    import pandas as pd

    shutil.copytree(root, dest, copy_function=os.link)
    db = dest / "ptbxl_database.csv"
    meta = pd.read_csv(db)
    os.unlink(db)  # a hard link: write a new file, never through the original's inode
    meta.assign(scp_codes="{}").to_csv(db, index=False)
    return dest


def test_encoder_handed_on_is_chosen_without_labels(pt_cfg, synth_root, cache_dir, tmp_path):
    """The same pretraining with and without labels in the data hands on the same encoder, the last epoch's."""
    labelled, unlabelled = tmp_path / "labelled", tmp_path / "unlabelled"
    pretrain(pt_cfg(epochs=3), lambda m: None, labelled)
    root = _without_labels(synth_root, tmp_path / "nolabels")
    with pytest.warns(UserWarning, match="without its probe"):
        pretrain(pt_cfg(epochs=3, data_root=str(root)), lambda m: None, unlabelled)
    a, b = read_checkpoint(labelled / HANDED_ON), read_checkpoint(unlabelled / HANDED_ON)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert json.loads(a["extra"]) == {"epoch": 3, "selection": "last"}
    last = read_checkpoint(labelled / LAST)["state_dict"]
    assert all(torch.equal(v, last[k]) for k, v in a["state_dict"].items())
