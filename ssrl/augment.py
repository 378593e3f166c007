"""Batched ECG augmentations on (B, leads, T) float tensors, on any device.

Every op draws per-sample parameters as tensors from the ``torch.Generator`` it is given
(no per-sample Python loops) and applies to a random subset of the batch (``rand(B) < p``).
On an accelerator the op runs on the whole batch and is merged with ``torch.where`` (no
host-device sync); on CPU it runs on the chosen records only, with the same random numbers,
so the output is the same and the work is ``p`` times smaller. Frequencies are in
Hz and converted with the sampling rate, so a preset means the same physical thing at
100 Hz and at 500 Hz. Parameters are drawn on the generator's device and moved to the
data's device: pass a CUDA generator for CUDA data to avoid host-to-device copies.
Amplitudes are in the units of the input (standardised ECGs: per-lead std 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F


class Draw:
    """Draws random tensors from one generator and moves them to the data's device and dtype."""

    def __init__(self, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> None:
        self.g, self.device, self.dtype = generator, device, dtype
        self.src = generator.device if generator is not None else device

    def uniform(self, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
        """U(lo, hi) samples of ``shape``."""
        u = torch.rand(shape, generator=self.g, device=self.src).to(self.device, self.dtype)
        return lo + (hi - lo) * u

    def normal(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Standard normal samples of ``shape``."""
        return torch.randn(shape, generator=self.g, device=self.src).to(self.device, self.dtype)


class RowDraw(Draw):
    """A Draw for the records ``rows`` of a batch of ``batch``: draws for every record, keeps those rows.

    Random numbers are drawn exactly as for the whole batch, so an op run on a subset of records
    gives those records the values they would get in the whole batch.
    """

    def __init__(self, draw: Draw, rows: torch.Tensor, batch: int) -> None:
        super().__init__(draw.g, draw.device, draw.dtype)
        self.rows, self.batch = rows, batch

    def uniform(self, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
        """U(lo, hi) samples of ``shape`` (its first axis the chosen records)."""
        return super().uniform((self.batch, *shape[1:]), lo, hi).index_select(0, self.rows)

    def normal(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Standard normal samples of ``shape`` (its first axis the chosen records)."""
        return super().normal((self.batch, *shape[1:])).index_select(0, self.rows)


def resample(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Linearly interpolate x (B, C, T) at per-sample fractional positions pos (B, T') in [0, T-1]."""
    t_in = x.shape[-1]
    pos = pos.clamp(0, t_in - 1)
    i0 = pos.floor().long().clamp(max=t_in - 1)
    i1 = (i0 + 1).clamp(max=t_in - 1)
    w = (pos - i0.to(pos.dtype)).unsqueeze(1)  # (B, 1, T')
    idx = (i0.unsqueeze(1).expand(-1, x.shape[1], -1), i1.unsqueeze(1).expand(-1, x.shape[1], -1))
    return torch.lerp(x.gather(2, idx[0]), x.gather(2, idx[1]), w)


@dataclass(frozen=True)
class RandomResizedCrop:
    """Crop a random window of ``scale`` x T samples and stretch it back to T (changes heart rate)."""

    changes_time_scale: ClassVar[bool] = True
    scale: tuple[float, float] = (0.5, 1.0)
    p: float = 1.0

    def __call__(self, x: torch.Tensor, d: Draw, fs: float) -> torch.Tensor:
        b, _, t = x.shape
        span = d.uniform((b, 1), *self.scale) * (t - 1)  # (B, 1) window length in samples
        start = d.uniform((b, 1), 0.0, 1.0) * ((t - 1) - span)
        grid = torch.linspace(0, 1, t, device=x.device, dtype=x.dtype)  # (T,)
        return resample(x, start + grid * span)


@dataclass(frozen=True)
class RandomCrop:
    """Keep a random window of ``scale`` x T samples, unstretched, at a random place in T; zeros elsewhere.

    Crop and shift without resizing: every sample keeps its spacing, so heart rate and RR intervals stay.
    """

    scale: tuple[float, float] = (0.5, 1.0)
    p: float = 1.0

    def __call__(self, x: torch.Tensor, d: Draw, fs: float) -> torch.Tensor:
        b, _, t = x.shape
        span = (d.uniform((b, 1), *self.scale) * t).round().clamp(1, t)  # (B, 1) window length in samples
        start = (d.uniform((b, 1), 0.0, 1.0) * (t - span + 1)).floor()  # where the window starts in x
        place = (d.uniform((b, 1), 0.0, 1.0) * (t - span + 1)).floor()  # where it lands in the output
        idx = torch.arange(t, device=x.device, dtype=x.dtype)  # (T,)
        src = (idx - place + start).clamp(0, t - 1).long()  # (B, T) whole-sample positions
        keep = (idx >= place) & (idx < place + span)  # (B, T)
        out = x.gather(2, src.unsqueeze(1).expand(-1, x.shape[1], -1))
        return out.masked_fill(~keep.unsqueeze(1), 0.0)


@dataclass(frozen=True)
class TimeWarp:
    """Smooth random speed changes: local speed in [1 - strength, 1 + strength], length kept (changes RR)."""

    changes_time_scale: ClassVar[bool] = True
    strength: float = 0.2
    knots: int = 4
    p: float = 1.0

    def __call__(self, x: torch.Tensor, d: Draw, fs: float) -> torch.Tensor:
        b, _, t = x.shape
        speed = d.uniform((b, 1, self.knots), 1 - self.strength, 1 + self.strength)
        speed = F.interpolate(speed, size=t, mode="linear", align_corners=True)[:, 0]  # (B, T) > 0
        pos = speed.cumsum(dim=1)
        pos = (pos - pos[:, :1]) / (pos[:, -1:] - pos[:, :1]) * (t - 1)  # monotone, 0 .. T-1
        return resample(x, pos)


@dataclass(frozen=True)
class AmplitudeScale:
    """Multiply each record by a log-uniform factor in ``scale``."""

    scale: tuple[float, float] = (0.8, 1.25)
    p: float = 1.0

    def __call__(self, x: torch.Tensor, d: Draw, fs: float) -> torch.Tensor:
        log_s = d.uniform((x.shape[0], 1, 1), math.log(self.scale[0]), math.log(self.scale[1]))
        return x * log_s.exp()


@dataclass(frozen=True)
class GaussianNoise:
    """Add white noise with a per-record standard deviation drawn from ``sigma``."""

    sigma: tuple[float, float] = (0.0, 0.05)
    p: float = 1.0

    def __call__(self, x: torch.Tensor, d: Draw, fs: float) -> torch.Tensor:
        sigma = d.uniform((x.shape[0], 1, 1), *self.sigma)
        return x + sigma * d.normal(tuple(x.shape))


def _time(x: torch.Tensor, fs: float) -> torch.Tensor:
    """Sample times in seconds, shape (T,)."""
    return torch.arange(x.shape[-1], device=x.device, dtype=x.dtype) / fs


@dataclass(frozen=True)
class BaselineWander:
    """Add a slow sinusoid (``freq`` Hz, one per record) with per-lead amplitude and phase."""

    freq: tuple[float, float] = (0.05, 0.5)
    amplitude: tuple[float, float] = (0.0, 0.3)
    p: float = 1.0

    def __call__(self, x: torch.Tensor, d: Draw, fs: float) -> torch.Tensor:
        b, c, _ = x.shape
        f = d.uniform((b, 1, 1), *self.freq)
        amp = d.uniform((b, c, 1), *self.amplitude)
        phase = d.uniform((b, c, 1), 0.0, 2 * math.pi)
        return x + amp * torch.sin(2 * math.pi * f * _time(x, fs) + phase)


@dataclass(frozen=True)
class Powerline:
    """Add mains hum at 50 or 60 Hz (chosen per record) with per-lead amplitude and phase.

    A frequency at or above Nyquist (fs / 2) is skipped rather than aliased: PTB-XL's
    100 Hz records are low-pass filtered below 50 Hz, so hum cannot appear in them and
    the op is an identity at fs = 100 Hz.
    """

    freqs: tuple[float, ...] = (50.0, 60.0)
    amplitude: tuple[float, float] = (0.0, 0.05)
    p: float = 1.0

    def __call__(self, x: torch.Tensor, d: Draw, fs: float) -> torch.Tensor:
        b, c, _ = x.shape
        choices = torch.tensor(self.freqs, device=x.device, dtype=x.dtype)
        pick = (d.uniform((b,), 0.0, 1.0) * len(self.freqs)).long().clamp(max=len(self.freqs) - 1)
        f = choices[pick].view(b, 1, 1)
        amp = d.uniform((b, c, 1), *self.amplitude) * (f < fs / 2).to(x.dtype)
        phase = d.uniform((b, c, 1), 0.0, 2 * math.pi)
        return x + amp * torch.sin(2 * math.pi * f * _time(x, fs) + phase)


@dataclass(frozen=True)
class LeadDropout:
    """Zero each lead with probability ``p_lead`` (a record never loses all its leads)."""

    p_lead: float = 0.2
    p: float = 1.0

    def __call__(self, x: torch.Tensor, d: Draw, fs: float) -> torch.Tensor:
        drop = d.uniform((x.shape[0], x.shape[1], 1), 0.0, 1.0) < self.p_lead  # (B, C, 1)
        drop = drop & ~drop.all(dim=1, keepdim=True)
        return x.masked_fill(drop, 0.0)


@dataclass(frozen=True)
class SegmentMask:
    """Zero one contiguous time segment of ``fraction`` x T samples in all leads."""

    fraction: tuple[float, float] = (0.05, 0.25)
    p: float = 1.0

    def __call__(self, x: torch.Tensor, d: Draw, fs: float) -> torch.Tensor:
        b, _, t = x.shape
        length = (d.uniform((b, 1), *self.fraction) * t).round()
        start = (d.uniform((b, 1), 0.0, 1.0) * (t - length + 1)).floor()
        idx = torch.arange(t, device=x.device, dtype=x.dtype)  # (T,)
        mask = (idx >= start) & (idx < start + length)  # (B, T)
        return x.masked_fill(mask.unsqueeze(1), 0.0)


@dataclass(frozen=True)
class BandPass:
    """Ideal FFT-domain band-pass with per-record cutoffs ``low``, ``high`` in Hz (high clipped to fs/2)."""

    low: tuple[float, float] = (0.0, 1.0)
    high: tuple[float, float] = (15.0, 40.0)
    p: float = 1.0

    def __call__(self, x: torch.Tensor, d: Draw, fs: float) -> torch.Tensor:
        b, _, t = x.shape
        spec = torch.fft.rfft(x, dim=-1)  # (B, C, T//2 + 1)
        freqs = torch.fft.rfftfreq(t, d=1.0 / fs, device=x.device).to(x.dtype)  # Hz
        lo = d.uniform((b, 1, 1), *self.low)
        hi = d.uniform((b, 1, 1), *self.high).clamp(max=fs / 2)
        keep = (freqs >= lo) & (freqs <= hi)
        return torch.fft.irfft(spec * keep, n=t, dim=-1)


Op = (RandomResizedCrop | RandomCrop | TimeWarp | AmplitudeScale | GaussianNoise | BaselineWander | Powerline
      | LeadDropout | SegmentMask | BandPass)


@dataclass(frozen=True)
class Augment:
    """A sequence of ops, each applied to a random subset of the batch with its probability ``p``."""

    ops: tuple[Op, ...]
    sampling_rate: float

    def __post_init__(self) -> None:
        if self.sampling_rate <= 0:
            raise ValueError(f"sampling_rate must be > 0 Hz; got {self.sampling_rate}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None, *,
                 rows_only: bool | None = None) -> torch.Tensor:
        """Augment x (B, leads, T) -> same shape, dtype and device.

        rows_only: run each op on its chosen records only (True) or on the whole batch merged with
        ``torch.where`` (False); None (the default) picks the first on CPU and the second elsewhere.
        Both give the same output for the same generator; the choice is only about speed.
        """
        if x.dim() != 3 or not x.is_floating_point():
            raise ValueError(f"expected a float tensor (B, leads, T); got {x.dtype} {tuple(x.shape)}")
        if not self.ops:
            return x
        work = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        d = Draw(generator, x.device, work)
        b, fs = x.shape[0], float(self.sampling_rate)
        subset = x.device.type == "cpu" if rows_only is None else rows_only
        y = x.to(work, copy=subset)  # the per-record path writes into y
        for op in self.ops:
            apply = d.uniform((b, 1, 1), 0.0, 1.0) < op.p  # (B, 1, 1)
            if not subset:  # whole batch, merged without a host-device sync
                y = torch.where(apply, op(y, d, fs), y)
                continue
            rows = apply.view(-1).nonzero().view(-1)  # (k,) chosen records
            if len(rows) == b:
                y = op(y, d, fs)
            elif len(rows) == 0:
                op(y, d, fs)  # nothing changes, but the op's random numbers are still drawn
            else:
                y.index_copy_(0, rows, op(y.index_select(0, rows), RowDraw(d, rows, b), fs))
        return y.to(x.dtype)


# What the views add after cropping (shared by each preset and its resizing variant).
_SIMCLR_AMPLITUDE_NOISE_MASKS: tuple[Op, ...] = (
    AmplitudeScale(scale=(0.8, 1.25), p=0.5),
    BaselineWander(freq=(0.05, 0.5), amplitude=(0.0, 0.2), p=0.5),
    GaussianNoise(sigma=(0.0, 0.05), p=0.5),
    LeadDropout(p_lead=0.2, p=0.3),
    SegmentMask(fraction=(0.05, 0.25), p=0.5),
)
_STRONG_AMPLITUDE_NOISE_MASKS: tuple[Op, ...] = (
    AmplitudeScale(scale=(0.6, 1.6), p=0.8),
    BaselineWander(freq=(0.05, 0.5), amplitude=(0.0, 0.4), p=0.5),
    Powerline(amplitude=(0.0, 0.1), p=0.3),
    GaussianNoise(sigma=(0.0, 0.1), p=0.5),
    BandPass(low=(0.0, 1.0), high=(15.0, 40.0), p=0.5),
    LeadDropout(p_lead=0.25, p=0.5),
    SegmentMask(fraction=(0.1, 0.35), p=0.5),
)
PRESETS: dict[str, tuple[Op, ...]] = {
    "none": (),
    # pretraining views that keep heart rate and RR intervals, so one encoder serves rhythm tasks too:
    # crop and shift without resizing (with time-out, most of SimCLR's signal on ECGs), no time warp
    "simclr": (
        RandomCrop(scale=(0.5, 1.0), p=1.0),
        *_SIMCLR_AMPLITUDE_NOISE_MASKS,
    ),
    # few-shot "with augmentation": stronger, adds mains hum and band-pass; keeps the time scale
    "strong": (
        RandomCrop(scale=(0.4, 1.0), p=0.8),
        *_STRONG_AMPLITUDE_NOISE_MASKS,
    ),
    # the earlier views, with resizing crop and time warp: they change heart rate (75 bpm cropped to 0.7
    # and stretched back reads 52 bpm), so rhythm tasks refuse them
    "simclr_resize": (
        RandomResizedCrop(scale=(0.5, 1.0), p=1.0),
        TimeWarp(strength=0.1, p=0.3),
        *_SIMCLR_AMPLITUDE_NOISE_MASKS,
    ),
    "strong_resize": (
        RandomResizedCrop(scale=(0.4, 1.0), p=0.8),
        TimeWarp(strength=0.2, p=0.5),
        *_STRONG_AMPLITUDE_NOISE_MASKS,
    ),
}
# Tasks whose labels are heart rate and RR intervals: no op may change the time scale for them.
RHYTHM_TASKS = frozenset({"rhythm5"})


def keeps_time_scale(preset: str) -> bool:
    """True when no op of the preset resizes or warps time (heart rate and RR intervals stay)."""
    return not any(getattr(op, "changes_time_scale", False) for op in PRESETS[preset])


def check_preset(preset: str, task: str = "") -> None:
    """ValueError for an unknown preset, or one that changes the time scale on a rhythm task."""
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; known presets: {', '.join(PRESETS)}")
    if task in RHYTHM_TASKS and not keeps_time_scale(preset):
        safe = [p for p in PRESETS if keeps_time_scale(p)]
        raise ValueError(f"augmentation preset {preset!r} resizes or warps time, which changes heart rate and RR "
                         f"intervals, the labels of task {task!r}; use one of {', '.join(safe)}")


def build_augment(preset: str, sampling_rate: float, task: str = "") -> Augment:
    """The augmentation pipeline ``preset`` at ``sampling_rate`` Hz; rhythm tasks refuse time-scale changes."""
    check_preset(preset, task)
    return Augment(PRESETS[preset], sampling_rate)
