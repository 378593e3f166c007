"""Fine-tuning: every track and few-shot condition through one loop with early stopping."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ssrl.augment import Augment, build_augment
from ssrl.config import FinetuneConfig
from ssrl.data import ECGData, TaskLabels, open_ptbxl, task_labels
from ssrl.models import build_head
from ssrl.train.batchnorm import recompute_bn_stats
from ssrl.train.common import build_track_encoder, classes_used, save_predictions, select_subset
from ssrl.train.embed import Features
from ssrl.train.handcrafted import fit_control
from ssrl.train.loop import (
    EarlyStopping,
    EpochLoss,
    Report,
    Signals,
    batch_indices,
    eval_batch_size,
    fit,
    resolve_device,
    seed_everything,
    snapshot,
)
from ssrl.train.metrics import choose_thresholds, multilabel_metrics, singlelabel_metrics, val_score
from ssrl.train.precision import autocast, resolve_precision
from ssrl.train.step import LossOf, compile_step, resolve_compile, train_step


class Classifier(nn.Module):
    """Encoder + head; a frozen encoder stays in eval mode (BatchNorm statistics never move)."""

    def __init__(self, encoder: nn.Module, head: nn.Module, frozen: bool) -> None:
        super().__init__()
        self.encoder, self.head, self.frozen = encoder, head, frozen
        if frozen:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> Classifier:
        """Switch train/eval mode, keeping a frozen encoder in eval."""
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 12, T) -> logits (B, C)."""
        return self.head(self.encoder(x))


class Standardize(nn.Module):
    """Fixed per-dimension standardisation of embeddings (a linear probe's input scaling)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (B, D) -> (B, D) with zero mean and unit std on the labelled training subset."""
        return (h - self.mean) / self.std


# A standardised dimension's std is floored at this share of the embedding's typical (median) std:
# random-encoder features have stds near 1e-7, so an absolute floor would undo the standardisation.
STD_FLOOR = 1e-3


def standardizer(h: torch.Tensor) -> Standardize:
    """Standardisation fitted on embeddings h (n, D); a dimension's std is floored relative to the typical std."""
    std = h.std(0)
    alive = std[std > 0]
    typical = alive.median() if len(alive) else torch.ones((), dtype=std.dtype, device=std.device)
    return Standardize(h.mean(0), std.clamp_min(STD_FLOOR * typical))


def build_classifier(cfg: FinetuneConfig, n_out: int, data: ECGData | None = None) -> Classifier:
    """A fresh model: random encoder, or one rebuilt from the checkpoint file (never a shared object)."""
    encoder = build_track_encoder(cfg, data)
    return Classifier(encoder, build_head(cfg.head, encoder.out_dim, n_out), cfg.spec.frozen)


@torch.no_grad()
def predict(model: nn.Module, src: Signals | Features, batch_size: int, multilabel: bool,
            precision: str = "fp32") -> np.ndarray:
    """Class probabilities for every row of src: (n, C) float32 (the forward pass at `precision`)."""
    model.eval()
    out = []
    device = next(model.parameters()).device
    for idx in batch_indices(len(src), eval_batch_size(batch_size, device), None):
        with autocast(device, precision):
            logits = model(src.get(idx)).float()
        out.append(torch.sigmoid(logits) if multilabel else torch.softmax(logits, 1))
    return torch.cat(out).cpu().numpy()


@dataclass
class Run:
    """What one fine-tuning run trains and evaluates: the network, its data sources and settings."""

    cfg: FinetuneConfig
    data: ECGData
    labels: TaskLabels
    pick: np.ndarray  # positions of the labelled subset in the train pool
    net: nn.Module  # the model, or only its head when the frozen encoder's embeddings are precomputed
    sources: tuple[Signals | Features, Signals | Features, Signals | Features]  # train, val, test
    y_train: torch.Tensor
    device: torch.device
    precision: str
    fast: bool  # training on precomputed embeddings (frozen encoder, no augmentation)

    @property
    def precise_bn(self) -> bool:
        """True when BatchNorm statistics are recomputed before evaluating (an encoder that trains)."""
        return self.cfg.bn_stats_applied == "precise"

    def predict(self, src: Signals | Features) -> np.ndarray:
        """Class probabilities of the network on every row of src."""
        return predict(self.net, src, self.cfg.eval_batch_size, self.labels.multilabel, self.precision)

    def refresh_bn(self) -> None:
        """Precise BatchNorm statistics from the labelled training subset, when the run asks for them."""
        if self.precise_bn:
            recompute_bn_stats(self.net, self.sources[0], self.cfg.batch_size, self.precision)


def prepare(cfg: FinetuneConfig) -> Run:
    """Data, labelled subset, a fresh model and its sources; frozen encoders embed once when they can."""
    device = resolve_device(cfg.device)
    # A frozen track trains a linear head on fp32 embeddings: nothing there gains from bf16.
    precision = "fp32" if cfg.spec.frozen else resolve_precision(cfg.precision, device)
    data = open_ptbxl(cfg.data_root, cfg.sampling_rate, cfg.cache_dir or None)
    labels = task_labels(data, cfg.task)
    train_all, val, test = (labels.split(s) for s in ("train", "val", "test"))
    pick = select_subset(train_all, cfg)
    model = build_classifier(cfg, len(labels.classes), data).to(device)
    sources = [Signals(data, rows, device) for rows in (train_all.rows[pick], val.rows, test.rows)]
    fast = cfg.spec.frozen and cfg.spec.augment == "none"
    if cfg.spec.frozen:  # a linear probe sees standardised embeddings, whatever the encoder's scale
        train_feats = Features(model.encoder, sources[0], cfg.eval_batch_size)
        model.head = nn.Sequential(standardizer(train_feats.x), model.head).to(device)
    if fast:  # a frozen encoder without augmentation: embed once (train already is), train the head
        sources = [train_feats, *(Features(model.encoder, s, cfg.eval_batch_size) for s in sources[1:])]
    return Run(cfg, data, labels, pick, model.head if fast else model, tuple(sources),
               torch.as_tensor(train_all.y[pick], device=device), device, precision, fast)


def classifier_loss(net: nn.Module, loss_fn: nn.Module, device: torch.device, precision: str) -> LossOf:
    """The part of a step that compiles: loss_fn(net(x) at `precision`, cast to fp32, y) for (x, y)."""

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            logits = net(x).float()  # (B, C)
        return loss_fn(logits, y)

    return loss_of


def train_epoch(run: Run, opt: torch.optim.Optimizer, loss_of: LossOf, augment: Augment,
                gens: tuple[torch.Generator, torch.Generator], epoch: int) -> float:
    """One pass over the labelled subset in shuffled batches; returns the mean training loss."""
    run.net.train()
    losses = EpochLoss(epoch)
    for idx in batch_indices(len(run.sources[0]), run.cfg.batch_size, gens[0]):
        x = run.sources[0].get(idx)
        if not run.fast:
            x = augment(x, gens[1])
        losses.add(train_step(opt, loss_of, x, run.y_train[idx.to(run.device)]), weight=len(idx))
    return losses.mean()


def finetune(cfg: FinetuneConfig, report: Report, out_dir: Path | None = None) -> dict:
    """Train one track on one labelled subset; report per epoch; return the best epoch's test metrics."""
    if cfg.spec.fit != "sgd":  # a rhythm control (logistic regression or a rule) reports once
        return fit_control(cfg, report, out_dir)
    gen = seed_everything(cfg.seed)
    run = prepare(cfg)
    loss_fn = nn.BCEWithLogitsLoss() if run.labels.multilabel else nn.CrossEntropyLoss()
    augment = build_augment(cfg.spec.augment, cfg.sampling_rate, cfg.task)
    gens = (gen, torch.Generator(device=run.device).manual_seed(cfg.seed + 1))
    stopper = EarlyStopping(cfg.patience)
    compiled = resolve_compile(cfg.compile, run.device)
    loss_of = compile_step(classifier_loss(run.net, loss_fn, run.device, run.precision), run.device, compiled)

    def step(opt: torch.optim.Optimizer, gens: tuple[torch.Generator, torch.Generator], epoch: int) -> dict:
        return {"train_loss": train_epoch(run, opt, loss_of, augment, gens, epoch)}

    def validate(epoch: int, row: dict, best: dict | None) -> dict | None:
        run.refresh_bn()  # the snapshot below keeps these statistics with the weights
        p_val = run.predict(run.sources[1])
        row["val_score"] = val_score(run.labels.split("val").y, p_val, run.labels.multilabel)
        if stopper.update(row["val_score"], epoch):
            best = snapshot(run.net)
        row.update(val_classes_used=classes_used(p_val), best_epoch=stopper.best_epoch,
                   best_val_score=stopper.best, precision=run.precision, compiled=compiled)
        return best

    params = [p for p in run.net.parameters() if p.requires_grad]
    fitted = fit(run.net, params, (cfg.lr, cfg.weight_decay, cfg.epochs), gens, step, validate, report, out_dir,
                 stopper)
    epoch, best, history = fitted.epoch, fitted.best, fitted.history
    final = finish(run, best, out_dir)
    final.update(epoch=epoch, best_epoch=stopper.best_epoch, best_val_score=stopper.best, epochs_run=len(history),
                 collapsed=None if cfg.spec.frozen else int(stopper.best_epoch <= cfg.collapse_epoch))
    report(final)
    return final


def finish(run: Run, best: dict | None, out_dir: Path | None) -> dict:
    """Test metrics of the best epoch's model (its weights and BatchNorm statistics) and what it ran with."""
    if best is not None:
        run.net.load_state_dict(best)
    else:  # no epoch ran: evaluate the model as it is
        run.refresh_bn()
    train_y = run.labels.split("train").y
    out = evaluate(run.cfg, run.net, run.labels, run.sources[1:], train_y, out_dir, run.data, run.precision)
    out.update(precision=run.precision, n_labelled_used=len(run.pick), done=True,
               bn_stats=run.cfg.bn_stats_applied)
    return out


def evaluate(
    cfg: FinetuneConfig, net: nn.Module, labels: TaskLabels, srcs: tuple[Signals | Features, Signals | Features],
    y_train: np.ndarray, out_dir: Path | None, data: ECGData, precision: str,
) -> dict:
    """Test metrics of the best model; thresholds from the val fold; probabilities saved as npz."""
    p_val, p_test = (predict(net, s, cfg.eval_batch_size, labels.multilabel, precision) for s in srcs)
    val, test = labels.split("val"), labels.split("test")
    if labels.multilabel:
        thresholds = choose_thresholds(val.y, p_val)
        out = multilabel_metrics(test.y, p_test, thresholds, labels.classes)
    else:
        majority = int(np.bincount(y_train, minlength=len(labels.classes)).argmax())  # of the whole train pool
        out = singlelabel_metrics(test.y, p_test, labels.classes, majority)
    out["val_score"] = val_score(val.y, p_val, labels.multilabel)
    out["test_single_class"] = int(classes_used(p_test) == 1)  # the best model predicts one class on the test fold
    save_predictions(out_dir, cfg, labels, data, p_test)
    return out
