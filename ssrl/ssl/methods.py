"""SSL methods: an online encoder plus a head and a pure loss (solo-learn style).

A method is an ``SSLMethod``: built as ``Method(encoder, cfg)`` from a ``PretrainConfig`` (each reads
the settings it needs), with ``.encoder`` (the online encoder: the one to save),
``inputs(x, augment, generator)`` (what ``loss`` takes, made from one standardised batch
``(B, leads, T)``: two augmented views by default), ``loss(*inputs) -> Tensor`` and
``on_step_end(progress)`` called after each optimiser step with progress in [0, 1].
New methods register in ``METHODS``; the training loop never names one.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ssrl.augment import Augment
from ssrl.config import PretrainConfig
from ssrl.ssl.losses import byol_loss, nt_xent


class SSLMethod(nn.Module):
    """Base of every method: holds the encoder, makes two augmented views, has no per-step state."""

    def __init__(self, encoder: nn.Module, cfg: PretrainConfig) -> None:
        super().__init__()
        self.encoder = encoder

    def inputs(self, x: torch.Tensor, augment: Augment, generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
        """The arguments of ``loss`` for a standardised batch (B, leads, T): two augmented views."""
        return augment(x, generator), augment(x, generator)

    def loss(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The method's loss on what ``inputs`` made."""
        raise NotImplementedError

    def on_step_end(self, progress: float) -> None:
        """No per-step state."""


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Projector/predictor MLP: Linear -> BatchNorm1d -> ReLU -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))


class SimCLR(SSLMethod):
    """SimCLR: encoder + MLP projector, NT-Xent between the two views (cfg: proj_dim, temperature)."""

    proj_hidden = 512

    def __init__(self, encoder: nn.Module, cfg: PretrainConfig) -> None:
        super().__init__(encoder, cfg)
        self.projector = mlp(encoder.out_dim, self.proj_hidden, cfg.proj_dim)
        self.temperature = cfg.temperature

    def loss(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """NT-Xent of the projections of two views (B, leads, T)."""
        # x: (B, leads, T) -> h: (B, D) -> z: (B, proj_dim)
        z1 = self.projector(self.encoder(x1))
        z2 = self.projector(self.encoder(x2))
        return nt_xent(z1, z2, self.temperature)


class BYOL(SSLMethod):
    """BYOL: online encoder/projector/predictor regress an EMA target's projection of the other view (cfg: proj_dim)."""

    hidden = 512
    base_momentum = 0.99  # tau at the start of training; the cosine schedule takes it to 1

    def __init__(self, encoder: nn.Module, cfg: PretrainConfig) -> None:
        super().__init__(encoder, cfg)
        self.projector = mlp(encoder.out_dim, self.hidden, cfg.proj_dim)
        self.predictor = mlp(cfg.proj_dim, self.hidden, cfg.proj_dim)
        # the target starts as an exact copy of the online network and never receives gradients
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for p in self._target_params():
            p.requires_grad_(False)
        self.momentum = self.base_momentum  # tau used by the last on_step_end

    def _online_params(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.projector.parameters()]

    def _target_params(self) -> list[nn.Parameter]:
        return [*self.target_encoder.parameters(), *self.target_projector.parameters()]

    def loss(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Symmetric BYOL loss: online(x1) predicts target(x2) and online(x2) predicts target(x1)."""
        # x: (B, leads, T) -> h: (B, D) -> z: (B, proj_dim) -> p: (B, proj_dim)
        p1 = self.predictor(self.projector(self.encoder(x1)))
        p2 = self.predictor(self.projector(self.encoder(x2)))
        with torch.no_grad():
            t1 = self.target_projector(self.target_encoder(x1))
            t2 = self.target_projector(self.target_encoder(x2))
        return 0.5 * (byol_loss(p1, t2) + byol_loss(p2, t1))

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        """EMA update of the target with tau = 1 - (1 - base) (cos(pi progress) + 1) / 2."""
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress must be in [0, 1]; got {progress}")
        if not 0.0 <= self.base_momentum <= 1.0:
            raise ValueError(f"base_momentum must be in [0, 1]; got {self.base_momentum}")
        tau = 1.0 - (1.0 - self.base_momentum) * (math.cos(math.pi * progress) + 1.0) / 2.0
        self.momentum = tau
        for t, o in zip(self._target_params(), self._online_params()):
            t.lerp_(o.detach(), 1.0 - tau)  # t <- tau t + (1 - tau) o
        # BatchNorm buffers of the target are not averaged: in training they use batch statistics.
