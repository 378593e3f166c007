"""Encoders and heads: shapes for any leads/length, parameter counts, registry errors."""

from __future__ import annotations

import pytest
import torch

from ssrl.models import ENCODERS, HEADS, build_encoder, build_head
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


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_heads_map_embedding_to_logits(kind: str) -> None:
    head = build_head(kind, 32, 5)
    assert head(torch.randn(3, 32)).shape == (3, 5)


def test_unknown_head_lists_known_kinds() -> None:
    with pytest.raises(ValueError, match="linear, mlp"):
        build_head("transformer", 32, 5)
