"""Encoder registry, heads and a decoder.

Every encoder maps (B, leads, T) -> (B, out_dim) and exposes its pre-pool ``feature_map(x)``:
(B, feature_dim, ~T / feature_stride), which ``forward`` pools. A plug-in encoder is named
'package.module:Class' and resolved by ``ENCODERS`` (ssrl.registry; docs/EXTENDING.md).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ssrl.models.cnn import CNN6
from ssrl.models.decoder import ConvDecoder
from ssrl.models.heads import HEADS, build_head
from ssrl.models.xresnet import XResNet1d, XResNet1d50, XResNet1d101
from ssrl.registry import Registry, check_encoder_instance, is_plugin


def _no_class_check(name: str, cls: type) -> None:
    """An encoder class has nothing to check before it is built (out_dim is set by __init__)."""


ENCODERS: Registry[type[nn.Module]] = Registry("encoder", _no_class_check, {
    "cnn6": CNN6,
    "xresnet1d50": XResNet1d50,
    "xresnet1d101": XResNet1d101,
})


def encoder_kwargs(width: int) -> dict[str, Any]:
    """Keyword arguments for build_encoder from a config's encoder_width (0 = default)."""
    return {"width": width} if width else {}


def build_encoder(name: str, in_leads: int = 12, **kwargs) -> nn.Module:
    """Build the encoder ``name`` (registered, or a plug-in 'package.module:Class') for ``in_leads`` input leads."""
    if name not in ENCODERS:
        raise ENCODERS.unknown(name)
    encoder = ENCODERS[name](in_leads=in_leads, **kwargs)
    if is_plugin(name):
        check_encoder_instance(name, encoder)
    return encoder


__all__ = ["ENCODERS", "HEADS", "CNN6", "ConvDecoder", "XResNet1d", "XResNet1d50", "XResNet1d101", "build_encoder", "build_head",
           "encoder_kwargs"]
