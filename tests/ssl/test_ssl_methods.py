"""SSL methods: one constructor signature, registry, BYOL target network and EMA schedule, cross-view loss, learning."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from ssrl.augment import build_augment
from ssrl.config import PretrainConfig
from ssrl.models import build_encoder
from ssrl.ssl import BYOL, METHODS, Masked, SimCLR, SSLMethod, build_method, byol_loss, nt_xent


def tiny(name: str, seed: int = 0, **cfg) -> SSLMethod:
    torch.manual_seed(seed)
    settings = PretrainConfig(**{"proj_dim": 16, "decoder_width": 8, **cfg})
    return build_method(name, build_encoder("cnn6", in_leads=3, width=4), settings)


def views(seed: int = 0, b: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, 64, generator=g), torch.randn(b, 3, 64, generator=g)


def test_registry_and_encoder_attribute() -> None:
    assert dict(METHODS) == {"simclr": SimCLR, "byol": BYOL, "masked": Masked}
    enc = build_encoder("cnn6", in_leads=3, width=4)
    assert build_method("byol", enc).encoder is enc
    with pytest.raises(ValueError, match="byol, masked, simclr"):
        build_method("moco", enc)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_is_built_from_encoder_and_config(name: str) -> None:
    params = list(inspect.signature(METHODS[name]).parameters)
    assert params == ["encoder", "cfg"] and issubclass(METHODS[name], SSLMethod)
    m = tiny(name, proj_dim=24, temperature=0.3)
    assert isinstance(m.encoder, torch.nn.Module) and callable(m.loss) and callable(m.inputs)
    if name in ("simclr", "byol"):  # the config's settings reach the method
        assert m.projector[-1].out_features == 24
    if name == "simclr":
        assert m.temperature == 0.3


def test_contrastive_inputs_are_two_augmented_views() -> None:
    calls: list[torch.Tensor] = []

    def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        calls.append(x)
        return x + len(calls)

    x = torch.zeros(2, 3, 8)
    for name in ("simclr", "byol"):
        calls.clear()
        x1, x2 = tiny(name).inputs(x, augment, None)
        assert len(calls) == 2 and all(c is x for c in calls)
        assert torch.equal(x1, x + 1) and torch.equal(x2, x + 2)


def test_simclr_loss_is_nt_xent_of_projections_and_step_end_is_noop() -> None:
    m = tiny("simclr", temperature=0.2)
    x1, x2 = views()
    ref = nt_xent(m.projector(m.encoder(x1)), m.projector(m.encoder(x2)), 0.2)
    assert m.loss(x1, x2).item() == pytest.approx(ref.item(), rel=1e-5)
    before = [p.clone() for p in m.parameters()]
    m.on_step_end(0.5)
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))


def test_byol_target_starts_as_frozen_copy_of_online() -> None:
    m = tiny("byol")
    pairs = [*zip(m.encoder.parameters(), m.target_encoder.parameters()),
             *zip(m.projector.parameters(), m.target_projector.parameters())]
    assert len(pairs) > 0
    for online, target in pairs:
        assert torch.equal(online, target) and online.data_ptr() != target.data_ptr()
        assert online.requires_grad and not target.requires_grad
    x1, x2 = views()
    m.loss(x1, x2).backward()
    assert all(t.grad is None for _, t in pairs)
    assert all(o.grad is not None for o, _ in pairs)


def test_byol_loss_predicts_the_other_view_of_the_target() -> None:
    m = tiny("byol")
    with torch.no_grad():  # make target differ from online so every pairing gives a different value
        for p in [*m.target_encoder.parameters(), *m.target_projector.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    seen: list[torch.Tensor] = []
    m.target_encoder.register_forward_hook(lambda mod, inp, out: seen.append(out))
    x1, x2 = views()
    loss = m.loss(x1, x2)
    assert len(seen) == 2 and not any(o.requires_grad for o in seen)  # target ran under no_grad
    p1 = m.predictor(m.projector(m.encoder(x1)))
    p2 = m.predictor(m.projector(m.encoder(x2)))
    t1 = m.target_projector(m.target_encoder(x1))
    t2 = m.target_projector(m.target_encoder(x2))
    cross = 0.5 * (byol_loss(p1, t2) + byol_loss(p2, t1))
    same_view = 0.5 * (byol_loss(p1, t1) + byol_loss(p2, t2))  # the reference's bug
    assert loss.item() == pytest.approx(cross.item(), rel=1e-5)
    assert abs(loss.item() - same_view.item()) > 1e-3


@pytest.mark.parametrize("progress", [0.0, 0.3, 1.0])
def test_byol_ema_update_follows_cosine_schedule(progress: float) -> None:
    m = tiny("byol")
    m.base_momentum = 0.9
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    x1, x2 = views()
    opt.zero_grad()
    m.loss(x1, x2).backward()
    opt.step()
    old_target = m.target_encoder.features[0].weight.clone()
    new_online = m.encoder.features[0].weight.detach().clone()
    assert not torch.equal(old_target, new_online)
    m.on_step_end(progress)
    tau = 1 - (1 - 0.9) * (math.cos(math.pi * progress) + 1) / 2
    assert m.momentum == pytest.approx(tau)
    expected = tau * old_target + (1 - tau) * new_online
    torch.testing.assert_close(m.target_encoder.features[0].weight, expected)
    if progress == 1.0:
        assert torch.equal(m.target_encoder.features[0].weight, old_target)


def test_byol_rejects_progress_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match="progress"):
        tiny("byol").on_step_end(1.5)
    m = tiny("byol")
    m.base_momentum = 1.5
    with pytest.raises(ValueError, match="base_momentum"):
        m.on_step_end(0.5)


@pytest.mark.parametrize("name", ["byol", "simclr"])  # masked: tests/ssl/test_masked.py
def test_loss_falls_over_20_steps(name: str) -> None:
    """The loss on one fixed pair of views (same records, same augmentation draws) falls after 20 steps.

    Runs in fp32 whatever the CPU: no autocast here (precision applies in the pretraining loop). Measured on a
    2-core AVX2 AMD EPYC (no native bf16), seeds 0-2 of model, data and views: after/before on the fixed views
    SimCLR 0.58-0.68, BYOL 0.39-0.52, so 0.85 has 25 % room. The old check, the last 5 training losses against
    the first 3, each on fresh views, gave SimCLR 0.80-0.81 against the same 0.85: augmentation noise, not
    learning, decided it.
    """
    m = tiny(name)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    aug, g = build_augment("simclr", 100), torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 128, generator=g)
    fixed = m.inputs(x, aug, torch.Generator().manual_seed(100))  # the views the loss is judged on

    def fixed_loss() -> float:
        with torch.no_grad():
            return m.loss(*fixed).item()

    before, losses = fixed_loss(), []
    for step in range(20):
        loss = m.loss(*m.inputs(x, aug, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.on_step_end(step / 19)
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert fixed_loss() < 0.85 * before
