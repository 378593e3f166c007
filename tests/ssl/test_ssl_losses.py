"""NT-Xent and BYOL losses against naive, obviously-correct references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssrl.ssl import byol_loss, nt_xent


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """Loop over all 2N anchors: anchor k's positive is the other view of record k mod N."""
    n = z1.shape[0]
    z = [v / v.norm() for v in torch.cat([z1, z2]).double()]
    total = 0.0
    for i in range(2 * n):
        pos = i + n if i < n else i - n
        denom = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[pos]) / t) / denom)
    return total / (2 * n)


def wrong_positive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """A common bug: drop the diagonal but keep unshifted labels (wrong positive for view-1 anchors)."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = (z @ z.T / t)[~torch.eye(2 * n, dtype=torch.bool)].view(2 * n, 2 * n - 1)
    labels = torch.cat([(torch.arange(n) + n) % (2 * n - 1), torch.arange(n)])  # should be n + i - 1
    return F.cross_entropy(sim, labels)


@pytest.mark.parametrize("n", [2, 5, 16])
@pytest.mark.parametrize("d", [3, 32])
@pytest.mark.parametrize("t", [0.05, 0.1, 0.5, 1.0])
def test_nt_xent_equals_naive_loop(n: int, d: int, t: float) -> None:
    g = torch.Generator().manual_seed(n * 100 + d)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    assert nt_xent(z1, z2, t).item() == pytest.approx(naive_nt_xent(z1, z2, t), rel=1e-4, abs=1e-5)


def test_naive_reference_catches_wrong_positive_bug() -> None:
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(8, 16, generator=g)
    z2 = z1 + 0.3 * torch.randn(8, 16, generator=g)  # views correlated, as after training
    ref = naive_nt_xent(z1, z2, 0.1)
    assert nt_xent(z1, z2, 0.1).item() == pytest.approx(ref, rel=1e-4)
    assert abs(wrong_positive_nt_xent(z1, z2, 0.1).item() - ref) > 0.5


def test_nt_xent_rewards_aligned_views() -> None:
    z1 = torch.eye(6, 8)  # well spread: orthogonal records
    aligned = nt_xent(z1, z1.clone(), 0.1)
    shuffled = nt_xent(z1, z1[torch.tensor([1, 2, 3, 4, 5, 0])], 0.1)  # every positive is wrong
    assert aligned.item() == pytest.approx(-math.log(math.exp(10) / (math.exp(10) + 10)), abs=1e-6)
    assert aligned < shuffled - 5


def test_nt_xent_is_invariant_to_rescaling_and_differentiable() -> None:
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(4, 8, generator=g, requires_grad=True)
    z2 = torch.randn(4, 8, generator=g)
    base = nt_xent(z1, z2, 0.2)
    assert nt_xent(3.0 * z1, 0.01 * z2, 0.2).item() == pytest.approx(base.item(), rel=1e-5)
    base.backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0


def test_nt_xent_small_temperature_stays_finite() -> None:
    z = torch.randn(8, 4)
    assert torch.isfinite(nt_xent(z, -z, 1e-3))


@pytest.mark.parametrize("t", [0.0, -0.1, 1e-9, float("nan"), float("inf"), "0.1", None])
def test_nt_xent_rejects_bad_temperature(t: object) -> None:
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.randn(4, 3), torch.randn(4, 3), t)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape1,shape2,msg", [
    ((4, 3), (5, 3), "equal shapes"),
    ((4,), (4,), "2-D"),
    ((4, 3, 1), (4, 3, 1), "2-D"),
    ((1, 3), (1, 3), "at least 2"),
])
def test_nt_xent_rejects_bad_shapes(shape1: tuple, shape2: tuple, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        nt_xent(torch.randn(shape1), torch.randn(shape2), 0.1)


def test_byol_loss_equals_naive_and_detaches_target() -> None:
    g = torch.Generator().manual_seed(2)
    p = torch.randn(5, 7, generator=g, requires_grad=True)
    z = torch.randn(5, 7, generator=g, requires_grad=True)
    pd, zd = p.detach(), z.detach()
    naive = sum(2 - 2 * float(pd[i] @ zd[i]) / float(pd[i].norm() * zd[i].norm()) for i in range(5)) / 5
    loss = byol_loss(p, z)
    assert loss.item() == pytest.approx(naive, rel=1e-5)
    loss.backward()
    assert p.grad is not None and z.grad is None


def test_byol_loss_range_and_shape_checks() -> None:
    p = torch.randn(3, 4)
    assert byol_loss(p, 2 * p).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(p, -p).item() == pytest.approx(4.0, abs=1e-6)
    with pytest.raises(ValueError, match="equal shapes"):
        byol_loss(p, torch.randn(3, 5))
