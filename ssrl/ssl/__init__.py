"""Self-supervised losses (pure functions) and methods (registry)."""

from __future__ import annotations

from torch import nn

from ssrl.config import PretrainConfig
from ssrl.ssl.losses import byol_loss, masked_mse, nt_xent
from ssrl.ssl.masked import Masked, random_mask
from ssrl.ssl.methods import BYOL, SimCLR, SSLMethod

# Every method is built as Method(encoder, cfg) and reads the PretrainConfig settings it needs.
METHODS: dict[str, type[SSLMethod]] = {"simclr": SimCLR, "byol": BYOL, "masked": Masked}


def build_method(name: str, encoder: nn.Module, cfg: PretrainConfig | None = None) -> SSLMethod:
    """Wrap ``encoder`` in the registered SSL method ``name``, set up from ``cfg`` (defaults if None)."""
    if name not in METHODS:
        raise ValueError(f"unknown SSL method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name](encoder, cfg if cfg is not None else PretrainConfig())


__all__ = ["BYOL", "METHODS", "Masked", "SSLMethod", "SimCLR", "build_method", "byol_loss", "masked_mse",
           "nt_xent", "random_mask"]
