"""Self-supervised losses (pure functions) and methods (registry)."""

from __future__ import annotations

from torch import nn

from ssrl.ssl.losses import byol_loss, nt_xent
from ssrl.ssl.methods import BYOL, SimCLR

METHODS: dict[str, type[nn.Module]] = {"simclr": SimCLR, "byol": BYOL}


def build_method(name: str, encoder: nn.Module, **kwargs) -> nn.Module:
    """Wrap ``encoder`` in the registered SSL method ``name``."""
    if name not in METHODS:
        raise ValueError(f"unknown SSL method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name](encoder, **kwargs)


__all__ = ["BYOL", "METHODS", "SimCLR", "build_method", "byol_loss", "nt_xent"]
