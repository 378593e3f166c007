"""A light transposed-convolution decoder from an encoder's feature map back to the input signal."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvDecoder(nn.Module):
    """(B, in_channels, T') -> (B, out_leads, T): 1x1 conv, log2(stride) x [ConvTranspose1d /2, BN, ReLU], conv.

    Each transposed conv doubles the length, so a feature map of ceil(T / stride) steps comes back as
    ceil(T / stride) * stride >= T samples; the tail past T (the encoder's ceil rounding) is cut off.
    """

    def __init__(self, in_channels: int, out_leads: int, stride: int, width: int = 64) -> None:
        super().__init__()
        if stride < 1 or stride & (stride - 1):
            raise ValueError(f"ConvDecoder needs a power-of-two feature stride; got {stride}")
        if width < 1:
            raise ValueError(f"decoder width must be >= 1; got {width}")
        layers: list[nn.Module] = [nn.Conv1d(in_channels, width, 1)]
        for _ in range(stride.bit_length() - 1):
            layers += [nn.ConvTranspose1d(width, width, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        layers.append(nn.Conv1d(width, out_leads, 5, padding=2))
        self.net = nn.Sequential(*layers)
        self.stride = stride

    def forward(self, f: torch.Tensor, length: int) -> torch.Tensor:
        """Reconstruct ``length`` samples per lead from a feature map."""
        # f: (B, C, T') -> y: (B, leads, T' * stride) -> (B, leads, length)
        y = self.net(f)[..., :length]
        if y.shape[-1] < length:  # a feature map shorter than ceil(T / stride): hold the last sample
            y = F.pad(y, (0, length - y.shape[-1]), mode="replicate")
        return y
