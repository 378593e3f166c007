"""The input adapter of an encoder pretrained elsewhere: resampling, crop/pad, leads, scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly
from torch import nn

from ssrl.models.adapter import InputAdapter, polyphase_filter, resample

MEAN = np.linspace(-0.1, 0.1, 12).astype(np.float32)
STD = np.linspace(0.5, 1.5, 12).astype(np.float32)


class Identity(nn.Module):
    """An 'encoder' that returns its input, so tests see what the adapter feeds it."""

    out_dim = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def adapter(**kw) -> InputAdapter:
    base = dict(data_rate=100, rate=100, samples=0, lead_index=range(12), normalise="dataset", mean=MEAN, std=STD)
    return InputAdapter(Identity(), **{**base, **kw})


def standardised(mv: np.ndarray) -> torch.Tensor:
    """Records in mV (B, 12, T) as the project's batches hold them."""
    return torch.as_tensor((mv - MEAN[None, :, None]) / STD[None, :, None], dtype=torch.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("up,down,t", [(5, 1, 1000), (1, 5, 5000), (18, 5, 1000), (5, 2, 999), (2, 5, 1001)])
def test_resampling_equals_scipy_resample_poly(up, down, t):
    x = np.random.default_rng(0).standard_normal((2, 3, t))
    taps, skip = polyphase_filter(up, down)
    got = resample(torch.as_tensor(x), up, down, torch.as_tensor(taps), skip).numpy()
    assert np.allclose(got, resample_poly(x, up, down, axis=-1), atol=1e-10)


@pytest.mark.parametrize("data_rate,rate", [(100, 500), (500, 100), (100, 250), (500, 360)])
def test_a_resampled_sine_keeps_its_frequency_and_amplitude(data_rate, rate):
    t = np.arange(10 * data_rate) / data_rate
    mv = np.broadcast_to(np.sin(2 * np.pi * 7.0 * t), (1, 12, len(t))).copy()
    out = adapter(data_rate=data_rate, rate=rate, normalise="none").adapt(standardised(mv))[0, 0].numpy()
    assert out.shape == (10 * rate,)
    assert peak_hz(out, rate) == pytest.approx(7.0, abs=0.11)
    inner = out[rate:-rate]  # away from the edges' filter transients
    assert np.allclose(inner, np.sin(2 * np.pi * 7.0 * np.arange(len(out))[rate:-rate] / rate), atol=0.02)


def test_centre_crop_in_eval_and_random_crops_in_training_when_the_track_augments():
    ramp = np.broadcast_to(np.arange(1000, dtype=np.float32), (3, 12, 1000)).copy()
    x = standardised(ramp)
    ad = adapter(samples=500, normalise="none", random_crop=True, seed=1).eval()
    out = ad.adapt(x).numpy()
    assert out.shape == (3, 12, 500) and np.allclose(out[:, 0, 0], 250, atol=1e-3)  # (1000 - 500) / 2
    cropped = ad.train().adapt(x).numpy()
    starts = cropped[:, 0, 0]
    assert len(set(np.round(starts).tolist())) > 1  # a different window per record
    assert np.allclose(cropped[:, 3] - starts[:, None], np.arange(500), atol=1e-3)  # contiguous, on every lead
    fixed = adapter(samples=500, normalise="none", random_crop=False).train()  # a track without augmentation
    assert np.allclose(fixed.adapt(x)[:, 0, 0].numpy(), 250, atol=1e-3)
    again = adapter(samples=500, normalise="none", random_crop=True, seed=1).train()
    assert np.allclose(again.adapt(x)[:, 0, 0].numpy(), starts)  # the seed decides the crops


def test_a_shorter_record_is_padded_with_zeros_around_it():
    x = standardised(np.ones((1, 12, 100), dtype=np.float32))
    out = adapter(samples=110, normalise="none").adapt(x)[0, 0].numpy()
    assert out.shape == (110,) and np.allclose(out[:5], 0) and np.allclose(out[5:105], 1) and np.allclose(out[105:], 0)


def test_leads_are_selected_and_reordered_by_position():
    mv = np.broadcast_to(np.arange(12, dtype=np.float32)[None, :, None], (2, 12, 50)).copy()
    out = adapter(lead_index=[6, 1, 0], normalise="none").adapt(standardised(mv)).numpy()
    assert out.shape == (2, 3, 50) and np.allclose(out[:, :, 0], [[6, 1, 0]] * 2, atol=1e-5)


def test_normalisation_as_declared():
    rng = np.random.default_rng(0)
    mv = (rng.standard_normal((2, 12, 400)) * rng.uniform(0.1, 2, (2, 12, 1)) + 3).astype(np.float32)
    x = standardised(mv)
    assert np.allclose(adapter(normalise="none").adapt(x).numpy(), mv, atol=1e-4)  # millivolts again
    assert torch.equal(adapter(normalise="dataset").adapt(x), x)  # the project's standardisation
    per_lead = adapter(normalise="per_lead").adapt(x)
    assert torch.allclose(per_lead.mean(-1), torch.zeros(2, 12), atol=1e-4)
    assert torch.allclose(per_lead.std(-1), torch.ones(2, 12), atol=1e-4)
    whole = adapter(normalise="global").adapt(x)
    assert torch.allclose(whole.mean((1, 2)), torch.zeros(2), atol=1e-4)
    assert torch.allclose(whole.std((1, 2)), torch.ones(2), atol=1e-4)
    assert not torch.allclose(whole.std(-1), torch.ones(2, 12), atol=0.1)  # leads keep their relative scale
    flat = adapter(normalise="per_lead").adapt(torch.zeros(1, 12, 100))
    assert torch.isfinite(flat).all()  # a flat lead stays finite


def test_the_adapter_runs_in_float32_under_autocast_and_feeds_the_encoder():
    enc = nn.Sequential(nn.Conv1d(2, 4, 3), nn.AdaptiveAvgPool1d(1), nn.Flatten())
    enc.out_dim = 4
    ad = InputAdapter(enc, data_rate=100, rate=500, samples=1000, lead_index=[0, 1], normalise="per_lead",
                      mean=MEAN, std=STD)
    x = torch.randn(3, 12, 1000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ad.adapt(x).dtype == torch.float32
        assert ad(x).shape == (3, 4)
    assert set(ad.state_dict()) == {f"encoder.{k}" for k in enc.state_dict()}  # buffers of the adapter not saved
