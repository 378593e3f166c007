"""A training input pipeline in the style of the reference implementation, for comparison only.

Each epoch reads every record from disk with `wfdb.rdsamp`, standardises it and, for SimCLR,
draws two augmented views one record at a time in NumPy; a `torch.utils.data.DataLoader`
collates the batches. The augmentations are the kinds of the `simclr` preset with its
probabilities, written the way a careful per-sample implementation would: vectorised over the
12 leads of one record, a Python call per record. Do not train with this.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import wfdb
from torch.utils.data import Dataset


def _resample(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation of x (12, T) at fractional positions pos (T',)."""
    t = x.shape[-1]
    pos = np.clip(pos, 0, t - 1)
    i0 = np.minimum(np.floor(pos).astype(np.int64), t - 1)
    i1 = np.minimum(i0 + 1, t - 1)
    w = (pos - i0).astype(x.dtype)
    return x[:, i0] * (1 - w) + x[:, i1] * w


def augment_one(x: np.ndarray, rng: np.random.Generator, fs: float) -> np.ndarray:
    """One SimCLR view of one record x (12, T), the `simclr` preset's ops and probabilities."""
    c, t = x.shape
    span = rng.uniform(0.5, 1.0) * (t - 1)  # random resized crop (p = 1)
    x = _resample(x, rng.uniform(0, 1) * ((t - 1) - span) + np.linspace(0, 1, t) * span)
    if rng.random() < 0.3:  # time warp, 4 knots, speed in [0.9, 1.1]
        speed = np.interp(np.linspace(0, 3, t), np.arange(4), rng.uniform(0.9, 1.1, 4))
        pos = np.cumsum(speed)
        x = _resample(x, (pos - pos[0]) / (pos[-1] - pos[0]) * (t - 1))
    if rng.random() < 0.5:  # amplitude scale, log-uniform in [0.8, 1.25]
        x = x * math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
    if rng.random() < 0.5:  # baseline wander, 0.05-0.5 Hz, per-lead amplitude and phase
        f = rng.uniform(0.05, 0.5)
        amp, phase = rng.uniform(0, 0.2, (c, 1)), rng.uniform(0, 2 * math.pi, (c, 1))
        x = x + (amp * np.sin(2 * math.pi * f * np.arange(t) / fs + phase)).astype(x.dtype)
    if rng.random() < 0.5:  # gaussian noise
        x = x + (rng.uniform(0, 0.05) * rng.standard_normal((c, t))).astype(x.dtype)
    if rng.random() < 0.3:  # lead dropout, never all leads
        drop = rng.random(c) < 0.2
        if not drop.all():
            x = x.copy()
            x[drop] = 0
    if rng.random() < 0.5:  # one contiguous time mask, 5-25 %
        n = round(rng.uniform(0.05, 0.25) * t)
        s = int(rng.uniform(0, 1) * (t - n + 1))
        x = x.copy()
        x[:, s:s + n] = 0
    return x.astype(np.float32)


class WFDBDataset(Dataset):
    """Records read from disk on every access; `views=2` gives two augmented views, else (x, y)."""

    def __init__(self, root: Path, names: list[str], mean: np.ndarray, std: np.ndarray,
                 y: np.ndarray | None = None, views: int = 0, fs: float = 100.0, seed: int = 0) -> None:
        self.root, self.names, self.y, self.views, self.fs, self.seed = Path(root), names, y, views, fs, seed
        self.mean, self.std = mean.astype(np.float32)[:, None], std.astype(np.float32)[:, None]
        self.calls = 0

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int):
        signal, _ = wfdb.rdsamp(str(self.root / self.names[i]))  # (T, 12) float64, from disk every time
        x = (signal.T.astype(np.float32) - self.mean) / self.std  # (12, T)
        if self.views:
            self.calls += 1
            rng = np.random.default_rng((self.seed, i, self.calls))
            return tuple(torch.from_numpy(augment_one(x, rng, self.fs)) for _ in range(self.views))
        return torch.from_numpy(x), torch.from_numpy(self.y[i])
