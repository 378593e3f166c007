"""1-D xresnet (fastai style) as used by Strodthoff et al. 2020 for PTB-XL, as an encoder.

Shape follows ecg_ptbxl_benchmarking's ``xresnet1d``: a stem of three k=5 convs (stride 2 on
the first) with widths (w/2, w/2, w), max-pool /2, four stages of bottleneck blocks
(expansion 4, every stage w wide inside, 4w out, stride 2 from stage 2 on, kernel 5 in the
middle conv), zero-initialised last BatchNorm in each block, avg-pool + 1x1 conv shortcut.
Total downsampling 32 (T=1000 -> 32 steps). The classifier head is not part of the encoder.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, act: bool = True, zero_bn: bool = False) -> nn.Sequential:
    """Conv1d (no bias, kaiming init) + BatchNorm1d (+ ReLU); BN weight 0 when ``zero_bn``."""
    conv = nn.Conv1d(c_in, c_out, k, stride=stride, padding=(k - 1) // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight)
    bn = nn.BatchNorm1d(c_out)
    nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)
    nn.init.constant_(bn.bias, 1e-3)
    layers: list[nn.Module] = [conv, bn]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """1x1 -> kxk (strided) -> 1x1 bottleneck with an avg-pool/1x1-conv shortcut."""

    def __init__(self, c_in: int, hidden: int, c_out: int, stride: int, kernel_size: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            conv_bn(c_in, hidden, 1),
            conv_bn(hidden, hidden, kernel_size, stride=stride),
            conv_bn(hidden, c_out, 1, act=False, zero_bn=True),
        )
        short: list[nn.Module] = []
        if stride != 1:
            short.append(nn.AvgPool1d(2, ceil_mode=True))
        if c_in != c_out:
            short.append(conv_bn(c_in, c_out, 1, act=False))
        self.shortcut = nn.Sequential(*short)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block: (B, c_in, L) -> (B, c_out, ceil(L / stride))."""
        return self.act(self.convs(x) + self.shortcut(x))


class XResNet1d(nn.Module):
    """1-D bottleneck xresnet encoder: (B, leads, T) -> (B, 4*width) (or 8*width with concat pooling).

    ``feature_map`` is the pre-pool map (B, feature_dim = 4*width, ~T / feature_stride); ``forward`` pools it.
    """

    layers: tuple[int, ...] = (3, 4, 6, 3)

    def __init__(self, in_leads: int = 12, width: int = 64, kernel_size: int = 5, kernel_size_stem: int = 5,
                 concat_pool: bool = False, layers: tuple[int, ...] | None = None) -> None:
        super().__init__()
        layers = tuple(layers or self.layers)
        expansion = 4
        stem_w = (max(width // 2, 1), max(width // 2, 1), width)
        chans = (in_leads, *stem_w)
        self.stem = nn.Sequential(
            *[conv_bn(chans[i], chans[i + 1], kernel_size_stem, stride=2 if i == 0 else 1) for i in range(3)],
            nn.MaxPool1d(kernel_size=3, stride=2, padding=1),
        )
        blocks: list[nn.Module] = []
        c_in = width
        for stage, n_blocks in enumerate(layers):
            for b in range(n_blocks):
                stride = 2 if (stage > 0 and b == 0) else 1
                blocks.append(Bottleneck(c_in, width, width * expansion, stride, kernel_size))
                c_in = width * expansion
        self.blocks = nn.Sequential(*blocks)
        self.concat_pool = concat_pool
        self.in_leads = in_leads
        self.feature_dim = c_in
        self.feature_stride = 2 ** (2 + len(layers) - 1)  # stem conv, max-pool, every stage after the first
        self.out_dim = c_in * (2 if concat_pool else 1)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-pool features of a batch of ECGs."""
        # x: (B, leads, T) -> f: (B, 4w, ~T/32)
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a batch of ECGs."""
        # x: (B, leads, T) -> f: (B, 4w, ~T/32) -> h: (B, 4w) or (B, 8w)
        f = self.feature_map(x)
        if self.concat_pool:
            return torch.cat([f.mean(dim=-1), f.amax(dim=-1)], dim=1)
        return f.mean(dim=-1)


class XResNet1d50(XResNet1d):
    """xresnet1d50: stages (3, 4, 6, 3)."""

    layers = (3, 4, 6, 3)


class XResNet1d101(XResNet1d):
    """xresnet1d101: stages (3, 4, 23, 3)."""

    layers = (3, 4, 23, 3)
