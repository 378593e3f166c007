"""The reference implementation's fine-tuning bugs, each caught here."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from ssrl.config import ConfigError, FinetuneConfig
from ssrl.train import CheckpointError, TrainingDiverged, finetune, load_encoder, read_checkpoint
from ssrl.train.finetuning import Classifier, build_classifier


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_numbers(ft_cfg):
    a = finetune(ft_cfg(epochs=2), lambda m: None)
    b = finetune(ft_cfg(epochs=2), lambda m: None)
    assert a == b
    c = finetune(ft_cfg(epochs=2, seed=7), lambda m: None)
    assert c["test_macro_auroc"] != a["test_macro_auroc"]


def test_reports_every_epoch_counted_from_one(ft_cfg):
    seen = []
    final = finetune(ft_cfg(epochs=3), seen.append)
    assert [m["epoch"] for m in seen[:-1]] == [1, 2, 3]
    assert seen[-1] is final and final["done"]
    assert 1 <= final["best_epoch"] <= 3
    assert final["collapsed"] == int(final["best_epoch"] <= 1)
    assert 0.0 <= final["test_macro_auroc"] <= 1.0 and "test_auroc_NORM" in final and "test_macro_f1" in final


def test_loss_falls(ft_cfg):
    seen = []
    finetune(ft_cfg(epochs=6, lr=3e-3), seen.append)
    losses = [m["train_loss"] for m in seen if "train_loss" in m]
    assert losses[-1] < losses[0]


def test_reported_model_is_best_epoch_not_last(ft_cfg, tmp_path, monkeypatch):
    """Scripted validation scores put the best epoch at 2 of 4; the final model must be epoch 2's."""
    import ssrl.train.finetuning as ft

    scripted = iter([0.5, 0.9, 0.6, 0.7])
    probs = []

    def fake_val_score(y, prob, multilabel):
        probs.append(prob.copy())
        return next(scripted, -1.0)

    monkeypatch.setattr(ft, "val_score", fake_val_score)
    final = finetune(ft_cfg(epochs=4, lr=0.05, patience=20), lambda m: None, tmp_path)
    assert final["best_epoch"] == 2 and final["epoch"] == 4
    # probs: one per epoch, then the final model's validation predictions in evaluate()
    assert np.array_equal(probs[4], probs[1]), "the final model must be the best epoch's copy"
    assert not np.array_equal(probs[4], probs[3]), "the final model must not be the last epoch's"
    saved = np.load(tmp_path / "predictions.npz")
    assert saved["prob"].shape == saved["y"].shape and len(saved["ecg_id"]) == len(saved["y"])


def test_early_stopping_patience(ft_cfg):
    seen = []
    final = finetune(ft_cfg(epochs=30, patience=2, lr=0.05), seen.append)
    assert final["epochs_run"] <= final["best_epoch"] + 2
    assert final["epochs_run"] < 30
    assert final["epoch"] == final["epochs_run"] == seen[-2]["epoch"], "epoch is the last epoch that ran"


@pytest.mark.parametrize("augment", ["none", "strong"])
def test_frozen_encoder_never_moves(ft_cfg, pretrained_ckpt, augment):
    cfg = ft_cfg(track="ssl_frozen", pretrained=str(pretrained_ckpt), augment=augment, epochs=2)
    model = build_classifier(cfg, 5)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    model.train()
    assert not model.encoder.training, "BatchNorm of a frozen encoder must stay in eval mode"
    assert all(not p.requires_grad for p in model.encoder.parameters())
    # the loop itself: run it and compare the encoder it used with the checkpoint
    import ssrl.train.finetuning as ft

    used = {}
    orig = ft.build_classifier

    def spy(c, n):
        used["model"] = orig(c, n)
        return used["model"]

    ft.build_classifier = spy
    try:
        finetune(cfg, lambda m: None)
    finally:
        ft.build_classifier = orig
    after = used["model"].encoder.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), f"{k} moved (BatchNorm buffers included)"


def test_finetune_moves_encoder_and_leaves_checkpoint_alone(ft_cfg, pretrained_ckpt):
    digest = _sha(pretrained_ckpt)
    cfg = ft_cfg(track="ssl_finetune", pretrained=str(pretrained_ckpt), epochs=2)
    first = finetune(cfg, lambda m: None)
    assert _sha(pretrained_ckpt) == digest, "fine-tuning must never write the pretrained file"
    # a second run from the same file starts from the same weights: same numbers
    second = finetune(cfg, lambda m: None)
    assert first == second
    fresh = build_classifier(cfg, 5)
    ref = load_encoder(pretrained_ckpt)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, fresh.encoder.state_dict()[k])


def test_ssl_track_differs_from_frozen_track(ft_cfg, pretrained_ckpt):
    tuned = finetune(ft_cfg(track="ssl_finetune", pretrained=str(pretrained_ckpt), epochs=2), lambda m: None)
    frozen = finetune(ft_cfg(track="ssl_frozen", pretrained=str(pretrained_ckpt), epochs=2), lambda m: None)
    assert tuned["test_macro_auroc"] != frozen["test_macro_auroc"]


def test_resume_continues_where_it_stopped(ft_cfg, tmp_path):
    cfg = ft_cfg(epochs=4)
    whole = finetune(cfg, lambda m: None)

    class Crash(Exception):
        pass

    def crash_after_two(m):
        if m.get("epoch") == 2 and not m.get("done"):
            raise Crash

    with pytest.raises(Crash):
        finetune(cfg, crash_after_two, tmp_path)
    seen = []
    resumed = finetune(cfg, seen.append, tmp_path)
    assert [m["epoch"] for m in seen[:-1]] == [3, 4]
    assert resumed["test_macro_auroc"] == pytest.approx(whole["test_macro_auroc"], abs=1e-9)
    assert resumed["best_epoch"] == whole["best_epoch"]


def test_nan_loss_raises(ft_cfg):
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        finetune(ft_cfg(lr=1e30, epochs=3), lambda m: None)


def test_fewshot_single_label(ft_cfg):
    final = finetune(ft_cfg(task="rhythm5", track="scratch_aug", n_per_class=4, epochs=2, batch_size=16),
                     lambda m: None)
    assert final["n_labelled"] == 20
    for k in ("test_macro_f1", "test_accuracy", "test_balanced_accuracy", "test_trivial_macro_f1", "test_f1_SR"):
        assert 0.0 <= final[k] <= 1.0


def test_checkpoint_of_another_encoder_is_refused(ft_cfg, pretrained_ckpt):
    cfg = ft_cfg(track="ssl_finetune", pretrained=str(pretrained_ckpt), encoder="xresnet1d50")
    with pytest.raises(CheckpointError, match="holds encoder 'cnn6'"):
        build_classifier(cfg, 5)


def test_pickle_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    bad = tmp_path / "evil.pt"
    torch.save({"format": "ssrl-encoder/1", "payload": Evil()}, bad)
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(bad)
    assert not (tmp_path / "pwned").exists()


def test_ssl_track_without_checkpoint_is_a_config_error(ft_cfg):
    with pytest.raises(ConfigError, match="pretrained"):
        ft_cfg(track="ssl_finetune")


def test_classifier_train_mode_keeps_frozen_encoder_in_eval():
    from ssrl.models import build_encoder, build_head

    enc = build_encoder("cnn6", width=8)
    model = Classifier(enc, build_head("linear", enc.out_dim, 5), frozen=True)
    model.train()
    assert model.head.training and not model.encoder.training
    assert FinetuneConfig(track="supervised").spec.frozen is False


def test_frozen_head_sees_standardised_embeddings(ft_cfg, monkeypatch):
    """A random encoder's embeddings have arbitrary scale; the probe must standardise them."""
    import ssrl.train.finetuning as ft

    seen = {}
    orig = ft.Standardize.forward

    def spy(self, h):
        out = orig(self, h)
        seen.setdefault("first", out.detach().clone())
        return out

    monkeypatch.setattr(ft.Standardize, "forward", spy)
    final = finetune(ft_cfg(track="random_frozen", epochs=2, batch_size=10_000), lambda m: None)
    z = seen["first"]  # the whole labelled subset in one batch
    assert z.mean(0).abs().max() < 1e-3 and (z.std(0) - 1).abs().max() < 1e-2
    assert final["n_labelled"] == len(z)
