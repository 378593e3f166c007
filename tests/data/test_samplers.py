"""Label-subset samplers: stratified nested fractions and balanced per-class draws."""

from __future__ import annotations

import numpy as np
import pytest

from ssrl.data import balanced_subset, fraction_subset, stratified_order

FRACTIONS = (0.01, 0.05, 0.10, 0.25, 1.0)


def ptbxl_like(n: int = 3000, seed: int = 0) -> np.ndarray:
    """(n, 5) multi-hot with PTB-XL-like shares and co-occurrence; class 4 rare."""
    rng = np.random.default_rng(seed)
    norm = rng.random(n) < 0.44
    y = np.zeros((n, 5), dtype=np.float32)
    y[:, 0] = norm
    for c, p in zip(range(1, 5), (0.45, 0.43, 0.40, 0.22)):
        y[:, c] = ~norm & (rng.random(n) < p)
    y[~y.any(axis=1), 2] = 1  # every record has a class
    return y


def test_sizes_nesting_and_shares() -> None:
    y = ptbxl_like()
    n, share = len(y), y.mean(axis=0)
    previous: set[int] = set()
    for fraction in FRACTIONS:
        idx = fraction_subset(y, fraction, seed=42)
        assert idx.tolist() == sorted(set(idx.tolist())) and idx.min() >= 0 and idx.max() < n
        assert len(idx) == int(fraction * n + 0.5)
        assert previous <= set(idx.tolist())  # the 1 % subset sits inside the 5 % one, and so on
        previous = set(idx.tolist())
        counts = y[idx].sum(axis=0)
        assert np.abs(counts - share * len(idx)).max() <= 1.0, (fraction, counts, share * len(idx))
    assert len(previous) == n


def test_beats_plain_random_sampling() -> None:
    y = ptbxl_like(seed=1)
    share = y.mean(axis=0)
    idx = fraction_subset(y, 0.05, seed=7)
    rng = np.random.default_rng(7)
    plain = [np.abs(y[rng.choice(len(y), len(idx), replace=False)].sum(0) - share * len(idx)).max()
             for _ in range(20)]
    assert np.abs(y[idx].sum(0) - share * len(idx)).max() < min(plain)


def test_every_class_present_at_one_percent() -> None:
    y = ptbxl_like(n=2000)
    y[:, 4] = 0
    y[[3, 500, 1500], 4] = 1  # a class with 3 of 2000 records
    for seed in (42, 52, 62):
        idx = fraction_subset(y, 0.01, seed)
        assert (y[idx].sum(axis=0) > 0).all()
    tiny = fraction_subset(y, 1e-6, seed=0)  # round(f * n) = 0: still one record of each class
    assert (y[tiny].sum(axis=0) > 0).all() and len(tiny) <= 5
    order, n_cover = stratified_order(y, seed=0)
    assert (y[order[:n_cover]].sum(axis=0) > 0).all()


def test_deterministic_per_seed_and_seeds_independent() -> None:
    y = ptbxl_like()
    a, b = fraction_subset(y, 0.1, 42), fraction_subset(y, 0.1, 42)
    np.testing.assert_array_equal(a, b)
    c = fraction_subset(y, 0.1, 52)
    assert len(c) == len(a) and not np.array_equal(a, c)
    chance = len(a) ** 2 / len(y)  # expected overlap of two independent random draws
    assert len(set(a.tolist()) & set(c.tolist())) < 1.5 * chance


def test_label_combinations_keep_their_share() -> None:
    y = ptbxl_like()
    idx = fraction_subset(y, 0.05, seed=42)
    sets, inverse = np.unique(y, axis=0, return_inverse=True)
    want = np.bincount(inverse.reshape(-1), minlength=len(sets)) * len(idx) / len(y)
    got = np.bincount(inverse.reshape(-1)[idx], minlength=len(sets))
    assert np.abs(got - want).max() <= 1.5  # not only each class: each combination of classes


def test_rows_without_label_keep_their_share() -> None:
    y = ptbxl_like(n=1000)
    y[:100] = 0  # 10 % unlabelled rows
    idx = fraction_subset(y, 0.2, seed=3)
    assert abs((~y[idx].any(axis=1)).sum() - 20) <= 1


def test_numpy_fraction_and_seed() -> None:
    y = ptbxl_like(n=500)
    np.testing.assert_array_equal(fraction_subset(y, np.float32(0.25), np.int64(3)), fraction_subset(y, 0.25, 3))


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, float("nan"), "0.1", True])
def test_bad_fraction(fraction) -> None:
    with pytest.raises(ValueError, match="fraction"):
        fraction_subset(ptbxl_like(n=50), fraction, seed=0)


def test_bad_multi_hot() -> None:
    with pytest.raises(ValueError, match="multi-hot"):
        fraction_subset(np.array([0, 1, 1]), 0.5, seed=0)


def test_balanced_subset() -> None:
    y = np.repeat(np.arange(5), [500, 60, 40, 30, 20])
    idx = balanced_subset(y, 14, seed=42)
    assert np.bincount(y[idx], minlength=5).tolist() == [14] * 5
    assert idx.tolist() == sorted(set(idx.tolist()))
    np.testing.assert_array_equal(idx, balanced_subset(y, 14, seed=42))
    assert not np.array_equal(idx, balanced_subset(y, 14, seed=52))
    assert set(idx.tolist()) <= set(balanced_subset(y, 20, seed=42).tolist())  # nested in n_per_class


def test_balanced_subset_names_the_short_class() -> None:
    y = np.repeat(np.arange(5), [500, 60, 40, 30, 20])
    classes = ("SR", "AFIB", "STACH", "SARRH", "SBRAD")
    with pytest.raises(ValueError, match=r"n_per_class=60: STACH has 40, SARRH has 30, SBRAD has 20$"):
        balanced_subset(y, 60, seed=0, classes=classes)
    with pytest.raises(ValueError, match="class 2 has 40, class 3 has 30, class 4 has 20"):
        balanced_subset(y, 60, seed=0)
    with pytest.raises(ValueError, match="n_per_class=5: SBRAD has 0$"):
        balanced_subset(y[y < 4], 5, seed=0, classes=classes)  # a class absent altogether
    with pytest.raises(ValueError, match="n_per_class"):
        balanced_subset(y, 0, seed=0)
