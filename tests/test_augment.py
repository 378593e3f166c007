"""Batched ECG augmentations: what each op does to a record, the time scale rhythm presets keep, dtypes, determinism."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssrl.augment import (
    PRESETS,
    AmplitudeScale,
    Augment,
    BandPass,
    BaselineWander,
    GaussianNoise,
    LeadDropout,
    Powerline,
    RandomCrop,
    RandomResizedCrop,
    SegmentMask,
    TimeWarp,
    build_augment,
    keeps_time_scale,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ecg(b: int = 4, leads: int = 12, t: int = 1000, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, leads, t, generator=gen(seed))


def power(x: torch.Tensor, fs: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Frequencies (Hz) and power spectrum (B, C, F) of x."""
    return torch.fft.rfftfreq(x.shape[-1], 1 / fs), torch.fft.rfft(x.double(), dim=-1).abs() ** 2


def sines(fs: int, freqs: tuple[float, ...], seconds: float = 10.0) -> torch.Tensor:
    t = torch.arange(int(fs * seconds)) / fs
    return sum(torch.sin(2 * math.pi * f * t) for f in freqs).expand(2, 12, -1).clone()


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("fs,t", [(100, 1000), (500, 5000)])
def test_presets_work_in_float32_or_float64_and_return_the_input_dtype(preset: str, fs: int, t: int) -> None:
    """Half-precision records are augmented in float32 and cast back: bitwise the float32 views, cast. float64 ones
    stay float64 with the same random draws: measured on an AVX2 CPU (seeds 0-2) within 3.2e-3 of the float32 views
    (resizing presets: interpolated positions near 5000 in float32), so atol 5e-2 has 15x room; other draws differ by O(1)."""
    x, aug = ecg(3, 12, t), build_augment(preset, fs)
    y32 = aug(x, gen())
    for low in (torch.float16, torch.bfloat16):
        y = aug(x.to(low), gen())
        assert y.dtype == low and y.shape == x.shape
        assert torch.equal(y, aug(x.to(low).float(), gen()).to(low))
    y64 = aug(x.double(), gen())
    assert y64.dtype == torch.float64
    torch.testing.assert_close(y64, y32.double(), atol=5e-2, rtol=0)
    assert torch.isfinite(y32).all() and torch.equal(y32, x) == (preset == "none")


def pulses(fs: int, b: int = 32, seconds: float = 10.0, period: float = 0.8) -> torch.Tensor:
    """(b, 12, T) beats of height 4 and width 30 ms every ``period`` seconds (75 bpm): an ECG's R peaks, no noise."""
    t = torch.arange(int(fs * seconds)) / fs
    beats = torch.arange(0.3, seconds, period)
    return (4.0 * torch.exp(-0.5 * ((t[:, None] - beats) / 0.03) ** 2).sum(1)).expand(b, 12, -1).clone()


def median_beat_gaps(y: torch.Tensor, fs: int) -> list[float]:
    """Per record, the median time (s) between consecutive beats found in its leads that still show 4 or more.

    A beat is a maximum within +-0.2 s above half its lead's largest value; crops, masks and lead dropout leave
    some leads with fewer beats, and a record with none such is left out.
    """
    k = int(0.4 * fs) | 1
    top = y.amax(-1, keepdim=True)
    beat = (y == F.max_pool1d(y, k, 1, k // 2)) & (y > 0.5 * top) & (top > 0)  # (B, C, T)
    out = []
    for record in beat:  # test-side loop only
        gaps = [lead.nonzero().flatten().diff() for lead in record]
        gaps = [g for g in gaps if len(g) >= 3]
        if gaps:
            out.append(float(torch.cat(gaps).float().median()) / fs)
    return out


@pytest.mark.parametrize("fs", [100, 500])
@pytest.mark.parametrize("preset", sorted(set(PRESETS) - {"none"}))
def test_presets_for_rhythm_keep_the_beat_to_beat_time_and_the_resizing_ones_do_not(preset: str, fs: int) -> None:
    """fp32: 75 bpm beats (0.8 s apart) through each preset's views. Measured on an AVX2 CPU, seeds 0-5, 32 records: the
    presets rhythm tasks may use kept every record's median gap within 0.002 s of 0.8 s (31-32 records still showing
    beats); the resizing ones moved it by more than 5 % in 19-30 records. Thresholds: within 0.02 s in every record
    (28 or more of them shown), and more than 5 % off in at least 11 records."""
    y = build_augment(preset, fs)(pulses(fs), gen())
    gaps = torch.tensor(median_beat_gaps(y, fs))
    assert len(gaps) >= 28
    off = (gaps - 0.8).abs()
    if keeps_time_scale(preset):
        assert off.max() <= 0.02, gaps
    else:
        assert int((off > 0.04).sum()) >= 11, gaps


@pytest.mark.parametrize("preset", ["simclr", "strong", "simclr_resize", "strong_resize"])
def test_same_seed_same_output_other_seed_differs(preset: str) -> None:
    aug, x = build_augment(preset, 100), ecg()
    assert torch.equal(aug(x, gen(1)), aug(x, gen(1)))
    assert not torch.equal(aug(x, gen(1)), aug(x, gen(2)))
    assert not torch.equal(aug(x, gen(1)), x)


def test_none_is_identity_and_unknown_preset_lists_names() -> None:
    x = ecg()
    assert torch.equal(build_augment("none", 100)(x, gen()), x)
    with pytest.raises(ValueError, match="none, simclr, strong"):
        build_augment("mixup", 100)
    with pytest.raises(ValueError, match="sampling_rate"):
        build_augment("simclr", 0)


def test_rejects_non_batched_input() -> None:
    with pytest.raises(ValueError, match="leads, T"):
        build_augment("simclr", 100)(torch.randn(12, 1000), gen())


def test_probability_selects_a_random_subset_of_records() -> None:
    x = ecg(b=200, leads=2, t=50)
    y = Augment((AmplitudeScale(scale=(2.0, 3.0), p=0.5),), 100)(x, gen())
    changed = (y != x).flatten(1).any(dim=1)
    assert 0.3 < changed.float().mean() < 0.7
    assert torch.equal(y[~changed], x[~changed])
    assert torch.equal(Augment((AmplitudeScale(p=0.0),), 100)(x, gen()), x)


@pytest.mark.parametrize("fs", [100, 500])
def test_band_pass_removes_power_outside_its_band_in_hz(fs: int) -> None:
    x = ecg(t=10 * fs)
    y = Augment((BandPass(low=(1.0, 1.0), high=(20.0, 20.0)),), fs)(x, gen())
    f, px = power(x, fs)
    _, py = power(y, fs)
    outside, inside = (f < 1.0) | (f > 20.0), (f >= 1.0) & (f <= 20.0)
    assert py[..., outside].sum() < 1e-8 * px[..., outside].sum()
    torch.testing.assert_close(py[..., inside], px[..., inside], rtol=1e-4, atol=1e-3)


def test_band_pass_means_the_same_physical_band_at_100_and_500_hz() -> None:
    op = BandPass(low=(0.5, 0.5), high=(20.0, 20.0))
    for fs in (100, 500):
        x = sines(fs, (5.0, 30.0))
        y = Augment((op,), fs)(x, gen())
        torch.testing.assert_close(y, sines(fs, (5.0,)), atol=1e-4, rtol=0)  # 30 Hz gone, 5 Hz intact


def test_per_record_band_pass_cutoffs_differ() -> None:
    x = sines(100, (10.0, 20.0, 30.0, 40.0))[:1].expand(64, -1, -1).clone()
    y = Augment((BandPass(low=(0.0, 0.0), high=(15.0, 45.0)),), 100)(x, gen())
    assert len({round(float(v), 3) for v in y[:, 0].pow(2).mean(dim=1)}) > 1


@pytest.mark.parametrize("fs", [100, 500])
def test_baseline_wander_adds_low_frequency_power(fs: int) -> None:
    x = torch.zeros(8, 12, 10 * fs)
    y = Augment((BaselineWander(amplitude=(0.2, 0.3)),), fs)(x, gen())
    f, py = power(y, fs)
    assert 0.1 < y.abs().max() <= 0.3 + 1e-6  # at most the largest amplitude, per lead
    assert py[..., f <= 1.0].sum() > 0.95 * py.sum()


def test_powerline_adds_mains_hum_and_is_skipped_at_or_above_nyquist() -> None:
    x = torch.zeros(16, 12, 5000)
    y = Augment((Powerline(amplitude=(0.05, 0.1)),), 500)(x, gen())
    f, py = power(y, 500)
    peak = f[py.sum(dim=1).argmax(dim=-1)]  # dominant frequency per record
    assert set(peak.tolist()) <= {50.0, 60.0} and len(set(peak.tolist())) == 2
    # each lead's hum peaks inside the amplitude range (sampled 500 Hz: >= cos(18 deg) = 0.95 of it; seen 0.048-0.0999)
    top = y.abs().amax(dim=-1)
    assert top.min() > 0.045 and top.max() <= 0.1 + 1e-6
    # 50 Hz is Nyquist at 100 Hz and 60 Hz is above it: hum cannot exist in such records
    assert torch.equal(Augment((Powerline(),), 100)(x[:, :, :1000], gen()), x[:, :, :1000])


def test_lead_dropout_zeroes_whole_leads_but_never_all() -> None:
    x = ecg(b=32)
    y = Augment((LeadDropout(p_lead=0.3),), 100)(x, gen())
    zero = (y == 0).all(dim=-1)  # (B, C)
    kept = (y == x).all(dim=-1)
    assert (zero | kept).all() and zero.any()
    assert not zero.all(dim=1).any()
    # fp32; measured on an AVX2 CPU, seeds 0-2: 0.296-0.306 of 3072 leads dropped at p_lead 0.3
    many = Augment((LeadDropout(p_lead=0.3),), 100)(ecg(b=256, t=10), gen())
    assert 0.26 < (many == 0).all(dim=-1).float().mean() < 0.34
    everything = Augment((LeadDropout(p_lead=1.0),), 100)(x, gen())
    assert torch.equal(everything, x)  # dropping all leads would erase the record: keep it


def test_segment_mask_zeroes_one_contiguous_segment_in_all_leads() -> None:
    x = ecg(b=16, t=1000)
    y = Augment((SegmentMask(fraction=(0.1, 0.2)),), 100)(x, gen())
    zero = y == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # same segment in every lead
    for row in zero[:, 0]:  # check each record's mask (test-side loop only)
        idx = row.nonzero().flatten()
        assert 100 <= len(idx) <= 200 and idx[-1] - idx[0] + 1 == len(idx)
    assert torch.equal(y[~zero], x[~zero])


def test_random_resized_crop_stretches_a_window_back_to_full_length() -> None:
    ramp = torch.arange(1000.0).expand(8, 2, -1).clone()
    same = Augment((RandomResizedCrop(scale=(1.0, 1.0)),), 100)(ramp, gen())
    torch.testing.assert_close(same, ramp)
    y = Augment((RandomResizedCrop(scale=(0.5, 0.5)),), 100)(ramp, gen())
    slope = y[..., 1:] - y[..., :-1]
    torch.testing.assert_close(slope, torch.full_like(slope, 0.5), atol=1e-3, rtol=0)
    assert (y[..., 0] >= 0).all() and (y[..., -1] <= 999).all()
    assert len(set(y[:, 0, 0].tolist())) > 1  # windows start at different places per record


def test_time_warp_is_monotone_and_keeps_endpoints() -> None:
    ramp = torch.arange(500.0).expand(8, 2, -1).clone()
    y = Augment((TimeWarp(strength=0.3),), 100)(ramp, gen())
    assert (y[..., 1:] >= y[..., :-1]).all()
    torch.testing.assert_close(y[..., [0, -1]], ramp[..., [0, -1]])
    assert (y - ramp).abs().max() > 5


def test_amplitude_scale_multiplies_each_record_by_one_log_uniform_factor() -> None:
    """fp32. One factor per record, in range, log-uniform: with scale (0.5, 2) half the factors fall below 1 (a
    uniform draw would put a third there). Measured on an AVX2 CPU, seeds 0-2, 512 records: 0.496-0.523 below 1."""
    x = ecg(b=64)
    ratio = Augment((AmplitudeScale(scale=(0.5, 2.0)),), 100)(x, gen()) / x
    per_record = ratio[:, 0, 0]
    torch.testing.assert_close(ratio, per_record[:, None, None].expand_as(ratio))
    assert per_record.min() >= 0.5 - 1e-6 and per_record.max() <= 2.0 + 1e-6
    factor = Augment((AmplitudeScale(scale=(0.5, 2.0)),), 100)(torch.ones(512, 1, 4), gen())[:, 0, 0]
    assert 0.43 < (factor < 1).float().mean() < 0.57


def test_gaussian_noise_is_additive_white_and_of_the_configured_sigma() -> None:
    """fp32, 64 records x 12 leads x 1000 samples. Measured on an AVX2 CPU, seeds 0-2, sigma 0.1: per-record std
    0.0986-0.1015, |mean| <= 0.0027, mean power of the lower over the upper half of the spectrum 0.9997-1.0038;
    with sigma in (0.1, 0.2) record stds 0.0996-0.2018. Thresholds: std within 5 %, |mean| < 0.01, power ratio
    within 10 %, stds spread over most of the range and inside it with 5 % room."""
    x = ecg(b=64)
    noise = Augment((GaussianNoise(sigma=(0.1, 0.1)),), 100)(x, gen()) - x
    alone = Augment((GaussianNoise(sigma=(0.1, 0.1)),), 100)(torch.zeros_like(x), gen())
    torch.testing.assert_close(noise, alone, atol=1e-6, rtol=0)  # added to the signal, independent of it
    std = noise.flatten(1).std(dim=1)
    assert std.min() > 0.095 and std.max() < 0.105
    assert noise.flatten(1).mean(dim=1).abs().max() < 0.01
    _, p = power(noise, 100)
    half = p.shape[-1] // 2
    assert 0.9 < p[..., 1:half].mean() / p[..., half:].mean() < 1.1  # white: as much power high as low
    std = (Augment((GaussianNoise(sigma=(0.1, 0.2)),), 100)(x, gen()) - x).flatten(1).std(dim=1)
    assert 0.095 < std.min() < 0.12 and 0.18 < std.max() < 0.21  # one sigma per record, drawn over the range


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_with_cuda_or_cpu_generator() -> None:
    x = ecg().cuda()
    aug = build_augment("strong", 100)
    y = aug(x, torch.Generator(device="cuda").manual_seed(0))
    assert y.device == x.device and torch.equal(y, aug(x, torch.Generator(device="cuda").manual_seed(0)))
    assert aug(x, gen()).device == x.device


def test_random_crop_keeps_sample_spacing_and_zeroes_the_rest() -> None:
    ramp = torch.arange(1000.0).expand(16, 2, -1).clone() + 1  # no zero inside the signal
    y = Augment((RandomCrop(scale=(0.3, 0.6)),), 100)(ramp, gen())
    kept = y != 0
    assert torch.equal(kept, kept[:, :1].expand_as(kept))  # the same window in every lead
    for row, keep in zip(y[:, 0], kept[:, 0]):  # test-side loop only
        idx = keep.nonzero().flatten()
        assert 300 <= len(idx) <= 600 and idx[-1] - idx[0] + 1 == len(idx)  # one contiguous window
        assert torch.equal(row[idx].diff(), torch.ones(len(idx) - 1))  # unstretched: one sample per sample
    assert len({int(k.nonzero()[0]) for k in kept[:, 0]}) > 1  # placed differently per record
    assert len({float(r[r != 0][0]) for r in y[:, 0]}) > 1  # cut from different places


def test_rhythm_tasks_refuse_presets_that_change_the_time_scale() -> None:
    assert [p for p in PRESETS if keeps_time_scale(p)] == ["none", "simclr", "strong"]
    for preset in ("simclr_resize", "strong_resize"):
        build_augment(preset, 100, "superdiagnostic")
        with pytest.raises(ValueError, match="heart rate"):
            build_augment(preset, 100, "rhythm5")
    build_augment("strong", 100, "rhythm5")


# The two ways of applying an op to its chosen records: on those records only (what CPU runs) and on the whole
# batch merged with torch.where (what CUDA runs). Both are run here on CPU through `rows_only`.
_EVERY_OP = (RandomResizedCrop(p=0.5), RandomCrop(p=0.5), TimeWarp(p=0.5), AmplitudeScale(p=0.5),
             GaussianNoise(p=0.5), BaselineWander(p=0.5), Powerline(p=0.5), LeadDropout(p=0.5),
             SegmentMask(p=0.5), BandPass(p=0.5))


@pytest.mark.parametrize("op", _EVERY_OP, ids=lambda op: type(op).__name__)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_record_and_whole_batch_paths_give_the_same_output(op, seed: int) -> None:
    """Same generator, same output: the records an op skips are untouched and the others get the same numbers."""
    x = ecg(b=16, t=2000, seed=seed)  # at 500 Hz: mains hum is below Nyquist, so Powerline acts too
    subset = Augment((op,), 500)(x, gen(seed), rows_only=True)
    whole = Augment((op,), 500)(x, gen(seed), rows_only=False)
    changed = (subset != x).flatten(1).any(1)
    assert 0 < int(changed.sum()) < 16  # p = 0.5 of 16: the mixed case, where the two paths differ in work
    torch.testing.assert_close(subset, whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset", sorted(set(PRESETS) - {"none"}))
def test_presets_give_the_same_views_on_either_path(preset: str) -> None:
    x = ecg(b=16, t=1000)
    aug = build_augment(preset, 100)
    whole = aug(x, gen(3), rows_only=False)
    torch.testing.assert_close(aug(x, gen(3), rows_only=True), whole, rtol=1e-5, atol=1e-5)
    assert torch.equal(aug(x, gen(3)), aug(x, gen(3), rows_only=True))  # CPU's default is the per-record path
    assert not torch.equal(whole, x)


def test_the_per_record_path_never_writes_into_its_input() -> None:
    x = ecg(b=8)
    kept = x.clone()
    Augment((AmplitudeScale(scale=(2.0, 3.0), p=0.5), SegmentMask(p=0.5)), 100)(x, gen(), rows_only=True)
    assert torch.equal(x, kept)
