"""Classification heads that sit on an encoder's embedding (kept separate from encoders)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def linear_head(in_dim: int, n_out: int) -> nn.Module:
    """Linear probe: (B, in_dim) -> (B, n_out) logits."""
    return nn.Linear(in_dim, n_out)


def mlp_head(in_dim: int, n_out: int, hidden: int = 256, dropout: float = 0.2) -> nn.Module:
    """Linear -> ReLU -> Dropout -> Linear: (B, in_dim) -> (B, n_out) logits."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(hidden, n_out))


HEADS: dict[str, Callable[..., nn.Module]] = {"linear": linear_head, "mlp": mlp_head}


def build_head(kind: str, in_dim: int, n_out: int, **kwargs) -> nn.Module:
    """Head ``kind`` ('linear' | 'mlp') mapping (B, in_dim) -> (B, n_out) logits."""
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; known heads: {', '.join(sorted(HEADS))}")
    return HEADS[kind](in_dim, n_out, **kwargs)
