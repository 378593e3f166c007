"""Masked reconstruction: the loss, the masks, the method, and the plain encoder a masked run hands on."""

from __future__ import annotations

import math

import pytest
import torch

from ssrl.config import PretrainConfig
from ssrl.models import ENCODERS, build_encoder
from ssrl.ssl import Masked, build_method, masked_mse, random_mask
from ssrl.train import HANDED_ON, LAST, load_encoder, pretrain, read_checkpoint

TINY = {"cnn6": {"width": 4}, "xresnet1d50": {"width": 4}, "xresnet1d101": {"width": 2}}


def naive_masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Loop over every position; average the squared error of the masked ones."""
    total, n = 0.0, 0
    for i in range(pred.numel()):
        if bool(mask.flatten()[i]):
            total += (float(pred.flatten()[i]) - float(target.flatten()[i])) ** 2
            n += 1
    return total / n


def waves(b: int = 16, leads: int = 3, t: int = 128, fs: int = 100, seed: int = 0) -> torch.Tensor:
    """Predictable synthetic ECG-like records: per-record sinusoids mixed into leads, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    time = torch.arange(t) / fs  # (T,) seconds
    freq = 1.0 + 2.0 * torch.rand(b, 2, 1, generator=g)  # (B, 2, 1) Hz
    phase = 2 * math.pi * torch.rand(b, 2, 1, generator=g)
    sources = torch.sin(2 * math.pi * freq * time + phase)  # (B, 2, T)
    mix = torch.randn(b, leads, 2, generator=g)  # (B, leads, 2)
    x = mix @ sources + 0.05 * torch.randn(b, leads, t, generator=g)
    return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)  # standardised per lead


def tiny(encoder: str = "cnn6", seed: int = 0, **cfg) -> Masked:
    torch.manual_seed(seed)
    settings = PretrainConfig(**{"decoder_width": 16, **cfg})
    return build_method("masked", build_encoder(encoder, in_leads=3, **TINY[encoder]), settings)


# --- the loss ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 17), (4, 12, 50), (1, 1, 5)])
def test_masked_mse_equals_naive_reference(shape: tuple[int, int, int]) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    pred, target = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    mask = torch.rand(shape, generator=g) < 0.4
    mask.view(-1)[0] = True
    assert masked_mse(pred, target, mask).item() == pytest.approx(naive_masked_mse(pred, target, mask), rel=1e-5)


def test_masked_mse_ignores_unmasked_positions() -> None:
    g = torch.Generator().manual_seed(3)
    pred, target = torch.randn(3, 4, 20, generator=g), torch.randn(3, 4, 20, generator=g)
    mask = torch.rand(3, 4, 20, generator=g) < 0.5
    base = masked_mse(pred, target, mask)
    for junk in (1e6, float("nan"), float("inf")):  # anything at unmasked positions, in pred or target
        assert torch.equal(masked_mse(pred.masked_fill(~mask, junk), target.masked_fill(~mask, -junk), mask), base)
    leaf = pred.clone().requires_grad_(True)
    masked_mse(leaf, target, mask).backward()
    assert torch.all(leaf.grad[~mask] == 0) and torch.all(leaf.grad[mask] != 0)
    # and it is not the MSE over all positions
    assert abs(base.item() - torch.mean((pred - target) ** 2).item()) > 1e-3


def test_masked_mse_is_float32_under_bf16() -> None:
    g = torch.Generator().manual_seed(4)
    pred, target = torch.randn(2, 3, 40, generator=g).bfloat16(), torch.randn(2, 3, 40, generator=g)
    mask = torch.rand(2, 3, 40, generator=g) < 0.5
    loss = masked_mse(pred, target, mask)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(naive_masked_mse(pred.float(), target, mask), rel=1e-5)


@pytest.mark.parametrize("pred,target,mask,msg", [
    (torch.zeros(2, 3, 4), torch.zeros(2, 3, 5), torch.ones(2, 3, 4, dtype=torch.bool), "equal shapes"),
    (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(2, 3, 1, dtype=torch.bool), "equal shapes"),
    (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(2, 3, 4), "bool"),
    (torch.zeros(2, 3, 4, dtype=torch.long), torch.zeros(2, 3, 4), torch.ones(2, 3, 4, dtype=torch.bool), "floating"),
    (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 3, 4, dtype=torch.bool), "no position"),
])
def test_masked_mse_rejects_bad_arguments(pred, target, mask, msg) -> None:
    with pytest.raises(ValueError, match=msg):
        masked_mse(pred, target, mask)


# --- the masks ---------------------------------------------------------------------------------------


def test_random_mask_hides_whole_segments_of_all_leads_at_the_ratio() -> None:
    mask = random_mask((32, 12, 1000), segment=20, ratio=0.3, lead_p=0.0, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (32, 12, 1000) and mask.dtype == torch.bool
    assert torch.equal(mask, mask[:, :1].expand_as(mask))  # every lead hidden at the same times
    seg = mask[:, 0].view(32, 50, 20)  # (B, segments, samples)
    assert torch.equal(seg, seg[..., :1].expand_as(seg))  # a segment is hidden whole or not at all
    assert torch.all(seg[..., 0].sum(1) == 15)  # round(0.3 * 50) segments in every record
    assert len({tuple(r.tolist()) for r in seg[..., 0]}) > 1  # records get different masks


def test_random_mask_is_seeded_and_hides_whole_leads() -> None:
    draw = lambda seed: random_mask((64, 12, 100), 10, 0.2, 0.5, torch.Generator().manual_seed(seed))  # noqa: E731
    a = draw(1)
    assert torch.equal(a, draw(1)) and not torch.equal(a, draw(2))
    whole = a.all(dim=-1)  # (B, leads): leads hidden at every sample
    assert 0.3 < whole.float().mean().item() < 0.7  # about lead_p of 768 leads
    assert torch.all(a.float().mean(-1)[~whole] == 0.2)  # the others: the segment ratio exactly


@pytest.mark.parametrize("segment,ratio,lead_p", [(0, 0.5, 0.0), (5, 0.0, 0.0), (5, 1.0, 0.0), (5, 0.5, 1.0),
                                                  (5, 0.5, -0.1)])
def test_random_mask_rejects_bad_settings(segment: int, ratio: float, lead_p: float) -> None:
    with pytest.raises(ValueError, match="masking needs"):
        random_mask((2, 3, 50), segment, ratio, lead_p)


def test_segment_length_is_in_seconds_at_any_sampling_rate() -> None:
    at100, at500 = tiny(sampling_rate=100, mask_seconds=0.2), tiny(sampling_rate=500, mask_seconds=0.2)
    assert (at100.segment, at500.segment) == (20, 100)
    g = torch.Generator().manual_seed(0)
    _, m100 = at100.inputs(torch.zeros(4, 3, 1000), None, g)
    _, m500 = at500.inputs(torch.zeros(4, 3, 5000), None, g)
    # the same hidden share, in segments of the same duration
    assert m100.float().mean().item() == m500.float().mean().item() == 0.5
    for mask, samples in ((m100, 20), (m500, 100)):  # 50 segments of 0.2 s, each hidden whole or not at all
        seg = mask[:, 0].view(4, 50, samples)
        assert torch.equal(seg, seg[..., :1].expand_as(seg))


def test_a_partial_last_segment_is_hidden_whole_like_the_others() -> None:
    """T = 1005 in segments of 20: 51 segments, the last 5 samples long, hidden all together or not at all."""
    mask = random_mask((256, 2, 1005), segment=20, ratio=0.5, lead_p=0.0, generator=torch.Generator().manual_seed(0))
    tail = mask[:, 0, 1000:]  # (B, 5)
    assert torch.equal(tail, tail[:, :1].expand_as(tail))
    assert tail[:, 0].any() and not tail[:, 0].all()  # hidden in some records, shown in others
    assert torch.all(mask[:, 0].sum(1) <= round(0.5 * 51) * 20)  # 26 segments, one of them maybe the short one


# --- the method ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fs,samples", [(100, 10), (500, 50)])
def test_the_methods_settings_reach_its_masks_and_decoder(fs: int, samples: int) -> None:
    """mask_seconds 0.1 is 10 samples at 100 Hz and 50 at 500 Hz; mask_ratio 0.3 hides 3 of every 10 segments of
    each lead it does not hide whole; mask_leads 0.5 hides about half the leads whole (192 leads; seeds 0-2 on an
    AVX2 CPU: 0.50-0.52 at both rates, so 0.35-0.65 has 4 standard errors of room either way). The decoder rebuilds every lead
    the encoder reads, and decoder_width 0 means a quarter of the encoder's feature channels (at least 8)."""
    m = tiny(sampling_rate=fs, mask_seconds=0.1, mask_ratio=0.3, mask_leads=0.5, decoder_width=0)
    assert m.segment == samples
    x = waves(b=64, t=10 * fs, fs=fs)
    _, mask = m.inputs(x, None, torch.Generator().manual_seed(0))
    whole = mask.all(dim=-1)  # (B, leads)
    assert 0.35 < whole.float().mean() < 0.65
    assert torch.all(mask.float().mean(-1)[~whole] == 0.3)
    seg = mask.view(64, 3, 100, samples)  # (B, leads, segments, samples)
    assert torch.equal(seg, seg[..., :1].expand_as(seg))  # whole segments
    partial = mask[~whole.all(dim=1)]  # records with a lead shown: every shown lead hides the same times
    shown = ~whole[~whole.all(dim=1)]
    for rec, keep in zip(partial, shown):  # test-side loop only
        assert torch.equal(rec[keep], rec[keep][:1].expand_as(rec[keep]))
    convs = [mod for mod in m.decoder.modules() if isinstance(mod, torch.nn.Conv1d)]
    assert convs[0].in_channels == m.encoder.feature_dim and convs[-1].out_channels == m.encoder.in_leads == 3
    assert convs[0].out_channels == max(8, m.encoder.feature_dim // 4)
    assert [type(mod) for mod in m.decoder.modules()].count(torch.nn.ConvTranspose1d) == (
        m.encoder.feature_stride.bit_length() - 1)
    wide = Masked(build_encoder("cnn6", in_leads=3, width=16), PretrainConfig())  # 64 feature channels
    assert wide.decoder.net[0].out_channels == 16 and tiny(decoder_width=24).decoder.net[0].out_channels == 24




def test_inputs_are_the_batch_itself_not_augmented_views() -> None:
    def boom(x, g):
        raise AssertionError("masked must not augment")

    x = waves(b=4)
    out, mask = tiny().inputs(x, boom, torch.Generator().manual_seed(0))
    assert out is x and mask.shape == x.shape and mask.any() and not mask.all()


def test_reconstruction_never_sees_the_hidden_samples() -> None:
    m = tiny()
    x = waves(b=4)
    _, mask = m.inputs(x, None, torch.Generator().manual_seed(0))
    other = torch.where(mask, torch.randn_like(x) * 100, x)  # differs from x on hidden samples only
    assert torch.equal(m.reconstruct(x, mask), m.reconstruct(other, mask))
    assert m.loss(x, mask).item() != m.loss(other, mask).item()  # but the targets are the hidden samples
    assert m.loss(x, mask).item() == pytest.approx(masked_mse(m.reconstruct(x, mask), x, mask).item(), rel=1e-6)


@pytest.mark.parametrize("name", sorted(ENCODERS))
@pytest.mark.parametrize("t", [64, 250, 37])
def test_every_registered_encoder_reconstructs_at_input_length(name: str, t: int) -> None:
    m = tiny(name)
    x = waves(b=2, t=t)
    mask = random_mask(tuple(x.shape), 10, 0.5, 0.0, torch.Generator().manual_seed(0))
    assert m.reconstruct(x, mask).shape == x.shape
    loss = m.loss(x, mask)
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(p.grad is not None for p in [*m.encoder.parameters(), *m.decoder.parameters()])


def test_encoder_without_a_feature_map_is_refused() -> None:
    class Pooled(torch.nn.Module):
        out_dim, in_leads = 8, 3

    with pytest.raises(ValueError, match="lacks feature_map, feature_dim, feature_stride"):
        Masked(Pooled(), PretrainConfig())


def test_loss_is_float32_and_finite_under_bf16_autocast() -> None:
    m = tiny()
    x = waves(b=4)
    x, mask = m.inputs(x, None, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m.loss(x, mask)
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())


def test_loss_falls_over_20_steps_and_beats_predicting_the_mean() -> None:
    """Seeds 0-2 on CPU: the last 5 steps average 0.40-0.49 against 1.03-1.05 at the start and 0.97-1.0 for zeros."""
    torch.manual_seed(0)
    m = Masked(build_encoder("cnn6", in_leads=3, width=16), PretrainConfig(mask_seconds=0.1, decoder_width=32))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    x, g = waves(), torch.Generator().manual_seed(0)
    losses, trivial = [], []
    for _ in range(20):
        x_in, mask = m.inputs(x, None, g)
        loss = m.loss(x_in, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        trivial.append(masked_mse(torch.zeros_like(x), x, mask).item())  # predict the standardised mean, 0
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:3]) / 3
    assert sum(losses[-5:]) / 5 < 0.7 * sum(trivial[-5:]) / 5


# --- a masked pretraining run ------------------------------------------------------------------------


def _run(synth_root, cache_dir, out, **kw) -> list[dict]:
    cfg = PretrainConfig(**{**dict(data_root=str(synth_root), cache_dir=str(cache_dir), method="masked", encoder="cnn6",
                                   encoder_width=8, decoder_width=8, epochs=2, batch_size=64, lr=3e-3, seed=0,
                                   device="cpu", probe_every=2, probe_size=120, max_pool=160, precision="fp32"), **kw})
    seen: list[dict] = []
    pretrain(cfg, seen.append, out)
    return seen


def test_masked_run_hands_on_the_plain_encoder(synth_root, cache_dir, tmp_path) -> None:
    seen = _run(synth_root, cache_dir, tmp_path)
    assert [r["epoch"] for r in seen] == [1, 2] and all(math.isfinite(r["train_loss"]) for r in seen)
    assert "probe_score" in seen[-1]
    plain = build_encoder("cnn6", in_leads=12, width=8)
    for name in (HANDED_ON, LAST):
        blob = read_checkpoint(tmp_path / name)
        assert list(blob["state_dict"]) == list(plain.state_dict())  # exactly the encoder's keys: no decoder inside
        enc = load_encoder(tmp_path / name, expect="cnn6", expect_kwargs={"width": 8})
        assert type(enc) is type(plain) and list(enc.state_dict()) == list(plain.state_dict())
        assert enc(torch.randn(2, 12, 1000)).shape == (2, plain.out_dim)
    moved = [not torch.equal(a, b) for a, b in zip(enc.state_dict().values(), plain.state_dict().values())
             if a.is_floating_point()]
    assert any(moved)  # it trained (a fresh encoder differs from it)


def test_masked_run_same_seed_same_numbers(synth_root, cache_dir, tmp_path) -> None:
    a = _run(synth_root, cache_dir, tmp_path / "a", epochs=1, probe_every=0)
    b = _run(synth_root, cache_dir, tmp_path / "b", epochs=1, probe_every=0)
    c = _run(synth_root, cache_dir, tmp_path / "c", epochs=1, probe_every=0, seed=1)
    assert a == b and a[0]["train_loss"] != c[0]["train_loss"]
