"""The input adapter of an encoder pretrained elsewhere: this project's batches in, the input it was trained on out.

Batches here are standardised ``(B, 12, T)`` records at the data's rate (ssrl.train.loop.Signals). An
encoder pretrained elsewhere expects its own rate, length, leads and scaling (its *input contract*), so
``InputAdapter`` wraps it and, on the batch's own device, in float32 whatever autocast says:

1. undoes the data's standardisation (back to mV) unless the contract is ``normalise: dataset``;
2. selects and reorders leads (``lead_index``: positions in the data's lead order);
3. resamples polyphase, exactly as ``scipy.signal.resample_poly`` (its filter, designed by scipy's
   ``firwin``; applied with ``conv_transpose1d`` so it runs on the GPU without a round trip to NumPy);
4. crops to the contract's length: a deterministic centre crop, or a random one per record while
   training a track that augments; pads with zeros (centred) when the record is shorter;
5. normalises: ``per_lead`` (each record's lead to zero mean, unit std over the window), ``global``
   (each record over all its leads and samples), ``none`` (mV) or ``dataset`` (the data's standardisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssrl.config import NORMALISE

EPS = 1e-6  # the smallest std a record's lead is divided by (a flat lead stays 0, not inf)


def polyphase_filter(up: int, down: int) -> tuple[np.ndarray, int]:
    """resample_poly's zero-padded FIR filter for up/down (reduced) and the leading samples it removes."""
    from scipy.signal import firwin

    max_rate = max(up, down)
    half_len = 10 * max_rate  # as scipy.signal.resample_poly, window ("kaiser", 5.0)
    h = firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * up
    pre_pad = down - half_len % down
    return np.concatenate([np.zeros(pre_pad), h]), (half_len + pre_pad) // down


def resample(x: torch.Tensor, up: int, down: int, taps: torch.Tensor, skip: int) -> torch.Tensor:
    """Polyphase resampling by up/down along the last axis (x: (B, C, T) -> (B, C, ceil(T * up / down)))."""
    b, c, t = x.shape
    n_out = -(-t * up // down)
    # upfirdn: insert up-1 zeros, convolve with the filter, keep every down-th sample; conv_transpose1d with
    # stride=up does the first two at once (a true convolution, no flip). The filter's tail is zero-padded
    # so that every kept sample exists, as resample_poly pads it.
    need = (skip + n_out - 1) * down + 1
    have = (t - 1) * up + taps.numel()
    kernel = F.pad(taps, (0, max(0, need - have))).view(1, 1, -1)
    y = F.conv_transpose1d(x.reshape(b * c, 1, t), kernel, stride=up)  # (B*C, 1, (T-1)*up + L)
    return y[..., ::down][..., skip:skip + n_out].reshape(b, c, n_out)


class InputAdapter(nn.Module):
    """An encoder pretrained elsewhere behind its input contract: (B, 12, T) standardised -> (B, out_dim).

    ``mean``/``std`` (12,) are the data's standardisation; ``samples`` is the contract's length in samples
    at ``rate`` (0: the whole resampled record); ``random_crop`` crops at random places while in train mode.
    """

    def __init__(self, encoder: nn.Module, *, data_rate: int, rate: int, samples: int, lead_index: Sequence[int],
                 normalise: str, mean: np.ndarray, std: np.ndarray, random_crop: bool = False, seed: int = 0) -> None:
        super().__init__()
        if normalise not in NORMALISE:
            raise ValueError(f"normalise {normalise!r} is unknown; use one of {', '.join(NORMALISE)}")
        self.encoder = encoder
        self.out_dim = encoder.out_dim
        self.in_leads = len(lead_index)
        g = math.gcd(rate, data_rate)
        self.up, self.down = rate // g, data_rate // g
        self.samples, self.normalise, self.random_crop, self.seed = samples, normalise, random_crop, seed
        self.register_buffer("lead_index", torch.as_tensor(list(lead_index), dtype=torch.long), persistent=False)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1), persistent=False)
        taps, self.skip = polyphase_filter(self.up, self.down) if (self.up, self.down) != (1, 1) else (np.ones(1), 0)
        self.register_buffer("taps", torch.as_tensor(taps, dtype=torch.float32), persistent=False)
        self._gen: torch.Generator | None = None

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's input from a standardised batch: (B, 12, T) -> (B, len(lead_index), samples), float32."""
        with torch.autocast(x.device.type, enabled=False):  # resampling and scaling in float32 under any autocast
            return self._adapt(x.float())

    def _adapt(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalise != "dataset":
            x = x * self.std + self.mean  # back to mV
        x = x.index_select(1, self.lead_index)  # (B, leads, T)
        if (self.up, self.down) != (1, 1):
            x = resample(x, self.up, self.down, self.taps, self.skip)  # (B, leads, T * up / down)
        x, pad = self._crop(x)
        if self.normalise == "per_lead":
            x = (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True).clamp_min(EPS)
        elif self.normalise == "global":
            x = (x - x.mean((1, 2), keepdim=True)) / x.std((1, 2), keepdim=True).clamp_min(EPS)
        return F.pad(x, (pad // 2, pad - pad // 2)) if pad else x

    def _crop(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """x cut to `samples` (centre, or random per record in training), and how many samples padding adds."""
        b, c, t = x.shape
        if not self.samples or t == self.samples:
            return x, 0
        if t < self.samples:
            return x, self.samples - t
        if not (self.training and self.random_crop):
            start = (t - self.samples) // 2
            return x[..., start:start + self.samples], 0
        if self._gen is None or self._gen.device != x.device:
            self._gen = torch.Generator(device=x.device).manual_seed(self.seed)
        starts = torch.randint(0, t - self.samples + 1, (b,), generator=self._gen, device=x.device)
        idx = starts[:, None] + torch.arange(self.samples, device=x.device)  # (B, samples)
        return x.gather(2, idx[:, None, :].expand(b, c, self.samples)), 0

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped encoder's pre-pool map of the adapted batch."""
        return self.encoder.feature_map(self.adapt(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a batch: x: (B, 12, T) -> adapted (B, leads, samples) -> h: (B, out_dim)."""
        return self.encoder(self.adapt(x))
