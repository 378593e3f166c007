"""Encoder registry, heads and a decoder.

Every encoder maps (B, leads, T) -> (B, out_dim) and exposes its pre-pool ``feature_map(x)``:
(B, feature_dim, ~T / feature_stride), which ``forward`` pools.
"""

from __future__ import annotations

from torch import nn

from ssrl.models.cnn import CNN6
from ssrl.models.decoder import ConvDecoder
from ssrl.models.heads import HEADS, build_head
from ssrl.models.xresnet import XResNet1d, XResNet1d50, XResNet1d101

ENCODERS: dict[str, type[nn.Module]] = {
    "cnn6": CNN6,
    "xresnet1d50": XResNet1d50,
    "xresnet1d101": XResNet1d101,
}


def build_encoder(name: str, in_leads: int = 12, **kwargs) -> nn.Module:
    """Build the registered encoder ``name`` for ``in_leads`` input leads."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; known encoders: {', '.join(sorted(ENCODERS))}")
    return ENCODERS[name](in_leads=in_leads, **kwargs)


__all__ = ["ENCODERS", "HEADS", "CNN6", "ConvDecoder", "XResNet1d", "XResNet1d50", "XResNet1d101", "build_encoder", "build_head"]
