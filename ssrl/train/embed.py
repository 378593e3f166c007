"""Embeddings of a frozen encoder, computed once and batched by index like the signals."""

from __future__ import annotations

import torch
from torch import nn

from ssrl.train.loop import Signals, batch_indices, eval_batch_size


class Features:
    """Precomputed fp32 embeddings of a frozen encoder; batches by index like Signals."""

    def __init__(self, encoder: nn.Module, sig: Signals, batch_size: int) -> None:
        encoder.eval()
        with torch.no_grad():  # fp32 at any precision: bf16 rounding is of the order of the features' spread
            chunks = batch_indices(len(sig), eval_batch_size(batch_size, sig.device), None)
            parts = [encoder(sig.get(i)).float() for i in chunks]
        self.x = torch.cat(parts)  # (n, D)

    def __len__(self) -> int:
        return len(self.x)

    def get(self, idx: torch.Tensor) -> torch.Tensor:
        """Embeddings for positions idx: (B,) -> (B, D)."""
        return self.x[idx.to(self.x.device)]
