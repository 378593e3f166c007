"""Encoders, heads and the decoder: shapes for any leads/length, feature maps, what each head computes, registry errors."""

from __future__ import annotations

import pytest
import torch

from ssrl.models import ENCODERS, HEADS, ConvDecoder, build_encoder, build_head
from ssrl.models.xresnet import Bottleneck

TINY = {"cnn6": {"width": 8}, "xresnet1d50": {"width": 8}, "xresnet1d101": {"width": 4}}


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", sorted(ENCODERS))
@pytest.mark.parametrize("leads,t", [(12, 1000), (1, 250), (3, 999), (12, 37)])
def test_encoder_maps_any_leads_and_length_to_out_dim(name: str, leads: int, t: int) -> None:
    enc = build_encoder(name, in_leads=leads, **TINY[name])
    h = enc(torch.randn(2, leads, t))
    assert h.shape == (2, enc.out_dim)
    assert torch.isfinite(h).all()


@pytest.mark.parametrize("name", sorted(ENCODERS))
@pytest.mark.parametrize("t", [1000, 256, 37])
def test_feature_map_is_the_map_forward_pools(name: str, t: int) -> None:
    torch.manual_seed(0)
    enc = build_encoder(name, in_leads=12, **TINY[name])
    x = torch.randn(3, 12, t)
    f = enc.feature_map(x)
    steps = -(-t // enc.feature_stride)  # ceil(T / stride) for a power-of-two T, within one step otherwise
    assert f.shape[:2] == (3, enc.feature_dim) and abs(f.shape[-1] - steps) <= 1
    if t % enc.feature_stride == 0:
        assert f.shape[-1] == t // enc.feature_stride
    assert torch.equal(enc(x), f.mean(dim=-1))  # bitwise: forward is the pooled feature map


def test_encoder_outputs_and_weights_unchanged_by_feature_map() -> None:
    """forward gives bitwise what the pre-feature_map code computed, and checkpoints keep their keys."""
    torch.manual_seed(0)
    x = torch.randn(2, 12, 300)
    cnn = build_encoder("cnn6", width=8)
    assert torch.equal(cnn(x), cnn.features(x).mean(dim=-1))  # the old CNN6.forward
    assert next(iter(cnn.state_dict())) == "features.0.weight"
    for concat in (False, True):
        xr = build_encoder("xresnet1d50", width=8, concat_pool=concat)
        f = xr.blocks(xr.stem(x))  # the old XResNet1d.forward
        old = torch.cat([f.mean(dim=-1), f.amax(dim=-1)], dim=1) if concat else f.mean(dim=-1)
        assert torch.equal(xr(x), old) and xr.feature_dim == 32 and xr.out_dim == (64 if concat else 32)
        assert {k.split(".")[0] for k in xr.state_dict()} == {"stem", "blocks"}


@pytest.mark.parametrize("stride,t", [(8, 1000), (8, 37), (32, 1000), (32, 5000), (1, 20)])
def test_decoder_maps_a_feature_map_back_to_the_input_length(stride: int, t: int) -> None:
    dec = ConvDecoder(in_channels=16, out_leads=12, stride=stride, width=8)
    ups = [m for m in dec.modules() if isinstance(m, torch.nn.ConvTranspose1d)]
    assert len(ups) == stride.bit_length() - 1  # one doubling per factor 2 of the stride
    y = dec(torch.randn(2, 16, -(-t // stride)), t)
    assert y.shape == (2, 12, t) and torch.isfinite(y).all()
    assert dec(torch.randn(2, 16, t // stride - 1), t).shape == (2, 12, t)  # a shorter map is padded


def test_decoder_output_follows_the_feature_map_in_time() -> None:
    dec = ConvDecoder(in_channels=4, out_leads=2, stride=8, width=8).eval()
    f = torch.zeros(1, 4, 20)
    a = dec(f, 160)
    f[..., 15] = 5.0  # a change at feature step 15 moves the output around samples 15 * 8 .. 16 * 8
    changed = (dec(f, 160) - a).abs().sum(1)[0] > 1e-6
    assert changed[15 * 8 : 16 * 8].all() and not changed[: 12 * 8].any() and not changed[19 * 8 :].any()


@pytest.mark.parametrize("stride,width", [(6, 8), (0, 8), (8, 0)])
def test_decoder_rejects_bad_settings(stride: int, width: int) -> None:
    with pytest.raises(ValueError, match="power-of-two|width"):
        ConvDecoder(4, 12, stride, width)


def test_cnn6_matches_reference_size() -> None:
    enc = build_encoder("cnn6")
    assert enc.out_dim == 256
    assert abs(n_params(enc) - 540_000) < 0.1 * 540_000
    convs = [m for m in enc.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [c.kernel_size[0] for c in convs] == [11, 7, 7, 5, 5, 3]
    assert [c.stride[0] for c in convs] == [2, 1, 2, 1, 2, 1]
    assert all(c.bias is None for c in convs)


def test_xresnet1d50_shape_and_zero_init_blocks() -> None:
    enc = build_encoder("xresnet1d50")
    assert enc.out_dim == 256
    blocks = [m for m in enc.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 3 + 4 + 6 + 3
    assert all(torch.all(b.convs[-1][1].weight == 0) for b in blocks)  # last BN of each block starts at 0
    assert 0.5e6 < n_params(enc) < 1.5e6
    assert build_encoder("xresnet1d50", concat_pool=True, width=8).out_dim == 2 * 4 * 8


def test_xresnet_downsamples_by_32() -> None:
    enc = build_encoder("xresnet1d50", width=8)
    f = enc.blocks(enc.stem(torch.randn(2, 12, 1000)))
    assert f.shape[-1] == 32


def test_encoder_is_deterministic_in_eval_and_backprops() -> None:
    enc = build_encoder("xresnet1d50", width=8)
    x = torch.randn(4, 12, 200)
    enc(x).sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    enc.eval()
    assert torch.equal(enc(x[:1]), enc(x[:1]))


def test_unknown_encoder_lists_known_names() -> None:
    with pytest.raises(ValueError, match="cnn6.*xresnet1d50"):
        build_encoder("resnet9000")


def test_linear_head_is_one_affine_map_of_the_embedding() -> None:
    """fp32. logits = h W^T + b with W (n_out, in_dim), and nothing else: linear in h up to the bias, each record
    on its own. Measured on an AVX2 CPU, seeds 0-4: every difference at most 6e-7 (inputs up to 10), so 1e-5 has 16x
    room; a wrong map or records mixed in a batch would be off by O(1)."""
    torch.manual_seed(0)
    head = build_head("linear", 32, 5)
    (w, b), = [(m.weight, m.bias) for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert (w.shape, b.shape, n_params(head)) == ((5, 32), (5,), 32 * 5 + 5)
    h1, h2 = torch.randn(2, 4, 32, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(head(h1), h1 @ w.T + b, atol=1e-5, rtol=0)
        zero = head(torch.zeros(1, 32))
        torch.testing.assert_close(head(2 * h1 - 3 * h2) - zero, 2 * (head(h1) - zero) - 3 * (head(h2) - zero),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(head(h1[:1]), head(h1)[:1], atol=1e-5, rtol=0)  # records do not mix


def test_mlp_head_is_linear_relu_dropout_linear_with_its_settings() -> None:
    """fp32. The hidden width and dropout it is given; in eval it computes relu(h W1^T + b1) W2^T + b2 exactly
    (so it is not linear: h and -h do not give opposite logits); in train its dropout zeroes hidden units. Measured
    on an AVX2 CPU, seeds 0-4: the exact form to 0 (1e-5 allowed), h and -h 0.79-1.18 away from opposite (0.01)."""
    torch.manual_seed(0)
    head = build_head("mlp", 32, 5, hidden=16, dropout=0.5)
    first, last = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    (drop,) = [m for m in head.modules() if isinstance(m, torch.nn.Dropout)]
    assert (first.weight.shape, last.weight.shape, drop.p) == ((16, 32), (5, 16), 0.5)
    assert n_params(head) == 32 * 16 + 16 + 16 * 5 + 5
    assert build_head("mlp", 32, 5)[0].out_features == 256  # the default width
    h = torch.randn(64, 32, dtype=torch.float32)
    head.eval()
    with torch.no_grad():
        want = torch.relu(h @ first.weight.T + first.bias) @ last.weight.T + last.bias
        torch.testing.assert_close(head(h), want, atol=1e-5, rtol=0)
        centre = head(torch.zeros(1, 32))
        assert (head(h) - centre + head(-h) - centre).abs().max() > 0.01  # a linear map would give 0
        assert torch.equal(head(h), head(h))  # eval: no dropout
        head.train()
        a, b = head(h), head(h)
    assert not torch.equal(a, b)  # train: each pass drops other hidden units
    plain = build_head("mlp", 32, 5, dropout=0.0)
    with torch.no_grad():
        assert torch.equal(plain.train()(h), plain.eval()(h))  # dropout 0: train and eval agree


def test_unknown_head_lists_known_kinds() -> None:
    assert sorted(HEADS) == ["linear", "mlp"]  # the two heads tested above; a new one needs its own test
    with pytest.raises(ValueError, match="linear, mlp"):
        build_head("transformer", 32, 5)
