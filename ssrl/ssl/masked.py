"""Masked reconstruction: hide time segments (and whole leads), rebuild them from the encoder's feature map.

A CNN has no tokens, so the masked samples are set to 0 (the mean of a standardised lead), the
encoder's pre-pool ``feature_map`` is decoded back to the input length by a light transposed-conv
decoder, and the loss is the MSE on the hidden samples only. The decoder is a sibling of the
encoder, never inside it, so the encoder handed on is the plain encoder.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ssrl.augment import Augment
from ssrl.config import PretrainConfig
from ssrl.models.decoder import ConvDecoder
from ssrl.ssl.losses import masked_mse
from ssrl.ssl.methods import SSLMethod

NEEDS = ("feature_map", "feature_dim", "feature_stride", "in_leads")


def check_mask_settings(segment: int, ratio: float, lead_p: float) -> None:
    """Raise ValueError unless segment >= 1 sample, 0 < ratio < 1 and 0 <= lead_p < 1."""
    if segment < 1 or not 0.0 < ratio < 1.0 or not 0.0 <= lead_p < 1.0:
        raise ValueError(f"masking needs segment >= 1 sample, 0 < ratio < 1 and 0 <= lead_p < 1; "
                         f"got {segment}, {ratio}, {lead_p}")


def random_mask(shape: tuple[int, int, int], segment: int, ratio: float, lead_p: float,
                generator: torch.Generator | None = None, device: torch.device | None = None) -> torch.Tensor:
    """Bool mask (B, leads, T), True = hidden: round(ratio * segments) segments per record, all leads; whole leads with lead_p."""
    check_mask_settings(segment, ratio, lead_p)
    b, leads, t = shape
    src = generator.device if generator is not None else (device or torch.device("cpu"))
    n_seg = math.ceil(t / segment)
    n_hide = min(n_seg, max(1, round(ratio * n_seg)))  # at least one segment: the loss always has targets
    # scores: (B, n_seg) uniform; the n_hide smallest of each record are hidden
    order = torch.rand(b, n_seg, generator=generator, device=src).argsort(dim=1)
    seg = torch.zeros(b, n_seg, dtype=torch.bool, device=src).scatter_(1, order[:, :n_hide], True)
    time = seg.repeat_interleave(segment, dim=1)[:, :t]  # (B, T)
    lead = torch.rand(b, leads, generator=generator, device=src) < lead_p  # (B, leads)
    return (time[:, None, :] | lead[:, :, None]).to(device or src)  # (B, leads, T)


class Masked(SSLMethod):
    """Masked reconstruction (cfg: mask_ratio, mask_seconds, mask_leads, decoder_width, sampling_rate)."""

    def __init__(self, encoder: nn.Module, cfg: PretrainConfig) -> None:
        super().__init__(encoder, cfg)
        missing = [a for a in NEEDS if not hasattr(encoder, a)]
        if missing:
            raise ValueError(f"masked pretraining needs an encoder with {', '.join(NEEDS)}; "
                             f"{type(encoder).__name__} lacks {', '.join(missing)}")
        self.segment = max(1, round(cfg.mask_seconds * cfg.sampling_rate))  # samples per masked segment
        self.mask_ratio, self.mask_leads = cfg.mask_ratio, cfg.mask_leads
        check_mask_settings(self.segment, self.mask_ratio, self.mask_leads)
        width = cfg.decoder_width or max(8, encoder.feature_dim // 4)
        self.decoder = ConvDecoder(encoder.feature_dim, encoder.in_leads, encoder.feature_stride, width)

    def inputs(self, x: torch.Tensor, augment: Augment, generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
        """The standardised batch itself (no augmentation views) and a random mask drawn from generator."""
        return x, random_mask(tuple(x.shape), self.segment, self.mask_ratio, self.mask_leads, generator, x.device)

    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The decoder's rebuild of x from its visible samples (hidden ones set to 0)."""
        # x: (B, leads, T) -> f: (B, C, ~T/stride) -> (B, leads, T)
        f = self.encoder.feature_map(x.masked_fill(mask, 0.0))
        return self.decoder(f, x.shape[-1])

    def loss(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MSE between the reconstruction and x on the hidden samples only."""
        return masked_mse(self.reconstruct(x, mask), x, mask)
