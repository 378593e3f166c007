"""Precise BatchNorm statistics: running averages replaced by exact averages over a data set.

With few labels a run takes a handful of optimiser steps per epoch, and BatchNorm running statistics
(an exponential average, momentum 0.1) stay near their initial values long after the weights moved;
in eval mode the network then sees wrongly scaled activations and a random-init encoder predicts a
single class. Recomputing the statistics on the training subset before evaluating removes that
artefact (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021: "precise BN").
"""

from __future__ import annotations

import torch
from torch import nn

from ssrl.train.loop import batch_indices
from ssrl.train.precision import autocast


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of model that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, src: object, batch_size: int, precision: str = "fp32") -> int:
    """Set every BatchNorm's running mean/var to their average over all batches of src; returns the layer count.

    src has `__len__` and `get(idx) -> (B, 12, T)` (no augmentation). Batches are the training batch
    size in a fixed order; each batch's statistics are weighted by its size (momentum b / (seen + b) is a
    cumulative average), so the result is the exact average whatever the last batch's size. No gradient
    is taken and no weight moves; only the BatchNorm layers run in train mode (dropout stays off). The
    model's mode and every layer's momentum are restored.
    """
    bns = batchnorms(model)
    if not bns or len(src) == 0:
        return 0
    was_training, momenta = model.training, [bn.momentum for bn in bns]
    device = next(model.parameters()).device
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.train()
    seen = 0
    try:
        for idx in batch_indices(len(src), batch_size, None):
            for bn in bns:
                bn.momentum = len(idx) / (seen + len(idx))
            with autocast(device, precision):
                model(src.get(idx))
            seen += len(idx)
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        model.train(was_training)
    return len(bns)
