"""Self-supervised pretraining on the unlabelled pool; an online linear probe monitors it and never selects."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler
from torch import nn

from ssrl.augment import Augment, build_augment
from ssrl.config import PretrainConfig, to_dict
from ssrl.data import ECGData, open_ptbxl, pretrain_rows, task_labels
from ssrl.models import build_encoder, encoder_kwargs
from ssrl.ssl import METHODS, build_method
from ssrl.train.checkpoint import save_encoder
from ssrl.train.loop import (
    EpochLoss,
    Report,
    Signals,
    batch_indices,
    eval_batch_size,
    fit,
    resolve_device,
    seed_everything,
)
from ssrl.train.metrics import val_score
from ssrl.train.precision import autocast, resolve_precision
from ssrl.train.step import LossOf, compile_step, resolve_compile, train_step

# HANDED_ON is the encoder handed to fine-tuning, chosen without labels (selection "last": the last
# epoch's, written once when training ends), so no label of any split touches pretraining. LAST is the
# latest epoch's, written every epoch. The file names stay as the published layout
# (<storage>/pretrained/<key>/) has them, "best" included.
HANDED_ON, LAST = "encoder_best.pt", "encoder_last.pt"


class Probe:
    """Logistic regression on frozen embeddings of a small labelled train subset, scored on val (a monitor)."""

    def __init__(self, data: ECGData, task: str, size: int, seed: int, device: torch.device) -> None:
        labels = task_labels(data, task)
        train, val = labels.split("train"), labels.split("val")
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(train.rows), size=min(size, len(train.rows)), replace=False))
        self.multilabel = labels.multilabel
        self.y_train, self.y_val = train.y[pick], val.y
        self.train = Signals(data, train.rows[pick], device)
        self.val = Signals(data, val.rows, device)

    @torch.no_grad()
    def _embed(self, encoder: nn.Module, src: Signals) -> np.ndarray:
        """fp32 embeddings whatever the run's precision (random-encoder features differ by ~1 % across records)."""
        chunks = batch_indices(len(src), eval_batch_size(512, src.device), None)
        parts = [encoder(src.get(i)).float().cpu() for i in chunks]
        return torch.cat(parts).numpy()  # (n, D)

    def score(self, encoder: nn.Module) -> float:
        """Validation score of a linear probe on the encoder's embeddings (encoder left in train mode)."""
        encoder.eval()
        h_train, h_val = self._embed(encoder, self.train), self._embed(encoder, self.val)
        encoder.train()
        scaler = StandardScaler().fit(h_train)
        clf = LogisticRegression(max_iter=2000, C=0.5)
        if self.multilabel:
            keep = [c for c in range(self.y_train.shape[1]) if 0 < self.y_train[:, c].sum() < len(self.y_train)]
            clf, y = OneVsRestClassifier(clf), self.y_train[:, keep]
        else:
            keep, y = None, self.y_train
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(scaler.transform(h_train), y)
            prob = clf.predict_proba(scaler.transform(h_val))
        if keep is not None:
            return val_score(self.y_val[:, keep], prob, True)
        full = np.zeros((len(prob), int(self.y_val.max(initial=0)) + 1 if len(self.y_val) else 1))
        full[:, clf.classes_] = prob
        return val_score(self.y_val, full, False)


def make_probe(data: ECGData, cfg: PretrainConfig, device: torch.device) -> Probe | None:
    """The online probe, or None when it is off or the data holds no labels for it (it only monitors)."""
    if not cfg.probe_every:
        return None
    labels = task_labels(data, cfg.probe_task)
    if min(len(labels.split("train")), len(labels.split("val"))) == 0:
        warnings.warn(f"no {cfg.probe_task} labels in the train or val folds: pretraining runs without its probe",
                      stacklevel=2)
        return None
    return Probe(data, cfg.probe_task, cfg.probe_size, cfg.seed, device)


def pretrain_pool(data: ECGData, cfg: PretrainConfig) -> np.ndarray:
    """Rows of the unlabelled pool (folds 1-8), subsampled to cfg.max_pool when set."""
    pool = pretrain_rows(data)
    if cfg.max_pool and cfg.max_pool < len(pool):
        pool = np.sort(np.random.default_rng(cfg.seed).choice(pool, cfg.max_pool, replace=False))
    return pool


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps in one shuffled pass over n rows (batch_indices drops a trailing batch of one)."""
    return max(1, sum(1 for _ in batch_indices(n, batch_size, torch.Generator())))


def method_loss(method: nn.Module, device: torch.device, precision: str) -> LossOf:
    """The part of a step that compiles: method.loss(*inputs) at `precision`, returned as an fp32 scalar."""

    def loss_of(*inputs: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            return method.loss(*inputs).float()

    return loss_of


def pretrain_epoch(method: nn.Module, sig: Signals, opt: torch.optim.Optimizer, augment: Augment,
                   gens: tuple[torch.Generator, torch.Generator], cfg: PretrainConfig, epoch: int,
                   loss_of: LossOf, steps: int) -> float:
    """One pass over the pool in shuffled batches of `steps` steps; returns the mean loss."""
    method.train()
    losses = EpochLoss(epoch)
    for step, idx in enumerate(batch_indices(len(sig), cfg.batch_size, gens[0])):
        x = sig.get(idx)  # (B, 12, T)
        inputs = method.inputs(x, augment, gens[1])  # what the method's loss takes, e.g. two augmented views
        losses.add(train_step(opt, loss_of, *inputs))
        method.on_step_end(((epoch - 1) * steps + step + 1) / (cfg.epochs * steps))
    return losses.mean()


def pretrain(cfg: PretrainConfig, report: Report, out_dir: Path) -> dict:
    """Pretrain an encoder; hand on the last epoch (encoder_best.pt, chosen without labels) in out_dir."""
    gen = seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    data = open_ptbxl(cfg.data_root, cfg.sampling_rate, cfg.cache_dir or None)
    pool = pretrain_pool(data, cfg)
    sig = Signals(data, pool, device)
    kwargs = encoder_kwargs(cfg.encoder_width)
    if cfg.method not in METHODS:
        raise ValueError(f"method {cfg.method!r} is unknown; use one of {', '.join(METHODS)}")
    method = build_method(cfg.method, build_encoder(cfg.encoder, in_leads=12, **kwargs), cfg).to(device)
    augment = build_augment(cfg.augment, cfg.sampling_rate)
    gens = (gen, torch.Generator(device=device).manual_seed(cfg.seed + 1))
    probe = make_probe(data, cfg, device)
    meta = {"probe_at_init": probe.score(method.encoder) if probe else None, "n_pool": len(pool)}  # in every row
    steps = steps_per_epoch(len(sig), cfg.batch_size)
    compiled = resolve_compile(cfg.compile, device)
    loss_of = compile_step(method_loss(method, device, precision), device, compiled)  # built once: compiled once

    def step(opt: torch.optim.Optimizer, gens: tuple[torch.Generator, torch.Generator], epoch: int) -> dict:
        return {"train_loss": pretrain_epoch(method, sig, opt, augment, gens, cfg, epoch, loss_of, steps)}

    def after(epoch: int, row: dict, best: None) -> None:
        row.update(precision=precision, compiled=compiled, **meta)
        if probe is not None and (epoch % cfg.probe_every == 0 or epoch == cfg.epochs):
            row["probe_score"] = probe.score(method.encoder)  # logged, never used to pick an epoch
        # the handed-on encoder is the last epoch's, so it is written once, when training ends
        for name in (LAST, HANDED_ON) if epoch == cfg.epochs else (LAST,):
            save_encoder(out_dir / name, method.encoder, cfg.encoder, kwargs, to_dict(cfg), epoch=epoch,
                         selection=cfg.selection)

    params = [p for p in method.parameters() if p.requires_grad]
    history = fit(method, params, (cfg.lr, cfg.weight_decay, cfg.epochs), gens, step, after, report, out_dir).history
    final = dict(history[-1]) if history else {}
    final.update(done=True, checkpoint=str(out_dir / HANDED_ON), n_pool=len(pool), selection=cfg.selection)
    return final
