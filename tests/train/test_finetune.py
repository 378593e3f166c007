"""The reference implementation's fine-tuning bugs, each caught here."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from ssrl.config import ConfigError
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
    """fp32 (ft_cfg). Measured on an AVX2 CPU, seeds 42/52/62: 0.62-0.65 in epoch 1, 0.39-0.41 in epoch 6 (0.59-0.65
    of the first), so falling below 0.85 of the first has room."""
    seen = []
    finetune(ft_cfg(epochs=6, lr=3e-3), seen.append)
    losses = [m["train_loss"] for m in seen if "train_loss" in m]
    assert len(losses) == 6 and losses[-1] < 0.85 * losses[0], losses


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


def _spy_models(monkeypatch) -> list[Classifier]:
    """Every Classifier that finetune() builds, in order (the objects it then trains)."""
    import ssrl.train.finetuning as ft

    built = []
    orig = ft.build_classifier

    def spy(*args, **kwargs):
        built.append(orig(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(ft, "build_classifier", spy)
    return built


@pytest.mark.parametrize("augment", ["none", "strong"])
def test_frozen_encoder_never_moves(ft_cfg, pretrained_ckpt, augment, monkeypatch):
    cfg = ft_cfg(track="ssl_frozen", pretrained=str(pretrained_ckpt), augment=augment, epochs=2)
    model = build_classifier(cfg, 5)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    model.train()
    assert model.head.training and not model.encoder.training, "BatchNorm of a frozen encoder must stay in eval"
    assert all(not p.requires_grad for p in model.encoder.parameters())
    trained = build_classifier(ft_cfg(track="supervised"), 5).train()  # the contrast: a trained encoder
    assert trained.encoder.training and all(p.requires_grad for p in trained.encoder.parameters())
    # the loop itself: run it and compare the encoder it used with the checkpoint
    built = _spy_models(monkeypatch)
    finetune(cfg, lambda m: None)
    (used,) = built
    after = used.encoder.state_dict()
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


def test_ssl_track_differs_from_frozen_track(ft_cfg, pretrained_ckpt, monkeypatch):
    """Both start from the checkpoint's encoder; ssl_finetune moves every encoder weight, ssl_frozen none."""
    built = _spy_models(monkeypatch)
    finetune(ft_cfg(track="ssl_finetune", pretrained=str(pretrained_ckpt), epochs=2), lambda m: None)
    finetune(ft_cfg(track="ssl_frozen", pretrained=str(pretrained_ckpt), epochs=2), lambda m: None)
    tuned, frozen = built
    ref = load_encoder(pretrained_ckpt)
    for name, p in ref.named_parameters():
        assert not torch.equal(dict(tuned.encoder.named_parameters())[name], p), f"ssl_finetune left {name} as loaded"
        assert torch.equal(dict(frozen.encoder.named_parameters())[name], p), f"ssl_frozen moved {name}"
    assert not any(p.requires_grad for p in frozen.encoder.parameters())


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


def _f1(y: np.ndarray, pred: np.ndarray, c: int) -> float:
    """F1 of class c counted by hand: 2 TP / (2 TP + FP + FN), 0 when the class is nowhere."""
    tp, fp, fn = np.sum((pred == c) & (y == c)), np.sum((pred == c) & (y != c)), np.sum((pred != c) & (y == c))
    return 0.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def test_fewshot_single_label(ft_cfg, tmp_path, monkeypatch):
    """rhythm5 with 4 records per class: the reported metrics are those of predictions.npz, counted by hand."""
    import ssrl.train.finetuning as ft

    runs, prepare = [], ft.prepare
    monkeypatch.setattr(ft, "prepare", lambda cfg: runs.append(prepare(cfg)) or runs[-1])
    final = finetune(ft_cfg(task="rhythm5", track="scratch_aug", n_per_class=4, epochs=2, batch_size=16),
                     lambda m: None, tmp_path)
    (run,) = runs
    train, test = run.labels.split("train"), run.labels.split("test")
    assert run.labels.classes[0] == "SR" and len(run.labels.classes) == 5
    assert final["n_labelled_used"] == 20 and np.bincount(train.y[run.pick], minlength=5).tolist() == [4] * 5
    saved = np.load(tmp_path / "predictions.npz")
    y, pred = saved["y"], saved["prob"].argmax(1)
    assert np.array_equal(y, test.y) and saved["prob"].shape == (len(y), 5)
    assert np.allclose(saved["prob"].sum(1), 1.0, atol=1e-5)  # softmax over the 5 classes, one label each
    f1 = [_f1(y, pred, c) for c in range(5)]
    assert final["test_macro_f1"] == pytest.approx(np.mean(f1), abs=1e-12)
    assert final["test_f1_SR"] == pytest.approx(f1[0], abs=1e-12)
    assert final["test_accuracy"] == pytest.approx(np.mean(pred == y), abs=1e-12)
    recall = [np.mean(pred[y == c] == c) for c in np.unique(y)]
    assert final["test_balanced_accuracy"] == pytest.approx(np.mean(recall), abs=1e-12)
    # the trivial baseline always answers the train pool's majority class m: precision q, recall 1, F1 2q/(1+q)
    q = np.mean(y == np.bincount(train.y, minlength=5).argmax())
    assert final["test_trivial_macro_f1"] == pytest.approx(2 * q / (1 + q) / 5, abs=1e-12)


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
    assert final["n_labelled_used"] == len(z)
