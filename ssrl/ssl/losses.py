"""Pure self-supervised losses on projections (no modules, no state)."""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

MIN_TEMPERATURE = 1e-6


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    """Raise ValueError unless ``a`` and ``b`` are equal-shape (N, D) tensors."""
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"{names} must be 2-D (N, D); got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"{names} must have equal shapes; got {tuple(a.shape)} and {tuple(b.shape)}")


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean NT-Xent (SimCLR) loss over all 2N anchors of two views' projections (N, D)."""
    real = isinstance(temperature, numbers.Real) and not isinstance(temperature, bool)
    t = float(temperature) if real else math.nan
    if not math.isfinite(t) or t < MIN_TEMPERATURE:
        raise ValueError(f"temperature must be a finite number >= {MIN_TEMPERATURE}; got {temperature!r}")
    _check_pair(z1, z2, "z1 and z2")
    n = z1.shape[0]
    if n < 2:
        raise ValueError(f"nt_xent needs at least 2 records per batch (negatives); got N={n}")
    # z1, z2: (N, D) -> z: (2N, D) unit rows; float32 so small temperatures stay stable under autocast
    z = F.normalize(torch.cat([z1, z2], dim=0).float(), dim=1)
    logits = z @ z.T / t  # (2N, 2N) cosine similarity / t
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))  # an anchor is never its own candidate
    # anchor i < N (view 1) has its positive at i + N (view 2), and anchor i + N has it at i
    idx = torch.arange(n, device=z.device)
    positives = torch.cat([idx + n, idx])
    return F.cross_entropy(logits, positives)


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean of 2 - 2 cos(p, z) over rows; ``z`` (the target) is detached."""
    _check_pair(p, z, "p and z")
    return (2 - 2 * F.cosine_similarity(p.float(), z.detach().float(), dim=-1)).mean()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the positions where ``mask`` is True; the others do not count."""
    if pred.shape != target.shape or mask.shape != target.shape:
        raise ValueError(f"pred, target and mask must have equal shapes; got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)} and {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (True = masked, scored); got {mask.dtype}")
    if not (pred.is_floating_point() and target.is_floating_point()):
        raise ValueError(f"pred and target must be floating point; got {pred.dtype} and {target.dtype}")
    n = mask.sum()
    if not bool(n):  # data-dependent check: one host sync per call, negligible beside a forward pass
        raise ValueError("mask selects no position; the masked loss needs at least one masked sample")
    # float32 so bf16 autocast outputs give a sound sum; the target never receives gradients
    err = (pred.float() - target.detach().float()).square()
    return err.masked_fill(~mask, 0.0).sum() / n
