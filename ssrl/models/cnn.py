"""cnn6: the reference's small 1-D CNN encoder (~0.54 M parameters at width 64)."""

from __future__ import annotations

import math

import torch
from torch import nn

KERNELS = (11, 7, 7, 5, 5, 3)
STRIDES = (2, 1, 2, 1, 2, 1)
WIDTH_MULT = (1, 1, 2, 2, 4, 4)  # channels 64, 64, 128, 128, 256, 256 at width 64


class CNN6(nn.Module):
    """Six [Conv1d, BatchNorm1d, ReLU] blocks and global average pooling: (B, leads, T) -> (B, 4*width).

    ``feature_map`` is the pre-pool map (B, feature_dim, ceil(T / feature_stride)); ``forward`` pools it.
    """

    def __init__(self, in_leads: int = 12, width: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_leads
        for k, s, m in zip(KERNELS, STRIDES, WIDTH_MULT):
            c_out = width * m
            layers += [nn.Conv1d(c_in, c_out, k, stride=s, padding=k // 2, bias=False),
                       nn.BatchNorm1d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.in_leads = in_leads
        self.out_dim = self.feature_dim = c_in
        self.feature_stride = math.prod(STRIDES)  # 8

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-pool features of a batch of ECGs."""
        # x: (B, leads, T) -> f: (B, 4w, ceil(T/8))
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a batch of ECGs."""
        # x: (B, leads, T) -> f: (B, 4w, ~T/8) -> h: (B, 4w)
        return self.feature_map(x).mean(dim=-1)
