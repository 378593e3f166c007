"""Seeded label-subset samplers: stratified multi-label fractions (nested) and balanced per-class draws."""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence

import numpy as np


def _multi_hot(y: np.ndarray) -> np.ndarray:
    """(n, C) bool; rows without any class get an extra 'no class' column so they are stratified too."""
    y = np.asarray(y)
    if y.ndim != 2 or len(y) == 0:
        raise ValueError(f"y must be a non-empty (n, C) multi-hot array, got shape {y.shape}")
    y = y.astype(bool)
    empty = ~y.any(axis=1)
    return np.column_stack([y, empty]) if empty.any() else y


def stratified_order(y: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """A seeded stratified ordering of all n records and the prefix length that covers every class."""
    y = _multi_hot(y)  # (n, C)
    n, n_classes = y.shape
    rng = np.random.default_rng(seed)
    counts = y.sum(axis=0)
    share = (counts / n).tolist()  # target share of each class in every prefix
    rarity = np.argsort(counts, kind="stable").tolist()  # rarest first; also breaks ties
    sets, inverse = np.unique(y, axis=0, return_inverse=True)  # label sets (combinations of classes)
    inverse = inverse.reshape(-1)
    labels = [np.flatnonzero(s).tolist() for s in sets]  # label set g -> its classes
    queues = [rng.permutation(np.flatnonzero(inverse == g)).tolist() for g in range(len(sets))]  # seeded order
    set_share = [len(q) / n for q in queues]
    by_class = [[g for g in range(len(sets)) if c in labels[g]] for c in range(n_classes)]
    have, set_have, taken, order = [0] * n_classes, [0] * len(sets), np.zeros(n, dtype=bool), []

    def take(i: int) -> None:
        """Append record i to the order and count its classes and label set."""
        taken[i] = True
        order.append(i)
        set_have[inverse[i]] += 1
        for j in labels[inverse[i]]:
            have[j] += 1

    def alive(g: int) -> bool:
        """Whether label set g still holds an untaken record (drops taken ones from its queue)."""
        q = queues[g]
        while q and taken[q[-1]]:
            q.pop()
        return bool(q)

    for c in rarity:  # cover phase: a random record of each class, rarest uncovered class first
        if counts[c] and not have[c]:
            members = np.flatnonzero(y[:, c] & ~taken)
            take(int(members[rng.integers(len(members))]))
    n_cover = len(order)
    while len(order) < n:  # fill phase: the class furthest below its share gets the next record, from
        k = len(order) + 1  # the label set whose pick least raises the squared deviations of classes and sets
        dev = [have[j] - share[j] * k for j in range(n_classes)]
        for c in sorted((c for c in rarity if counts[c]), key=lambda j: dev[j]):
            options = [g for g in by_class[c] if alive(g)]
            if options:
                g = min(options, key=lambda g: sum(2 * dev[j] + 1 for j in labels[g])
                        + 2 * (set_have[g] - set_share[g] * k) + 1)
                take(queues[g].pop())
                break
    return np.asarray(order, dtype=np.int64), n_cover


@functools.lru_cache(maxsize=16)
def _cached_order(y_bytes: bytes, shape: tuple[int, int], seed: int) -> tuple[np.ndarray, int]:
    """stratified_order memoised on the pool's bytes: every fraction of one (pool, seed) shares it."""
    order, n_cover = stratified_order(np.frombuffer(y_bytes, dtype=bool).reshape(shape), seed)
    order.flags.writeable = False
    return order, n_cover


def fraction_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of a stratified `fraction` of the multi-hot pool y; nested across fractions per seed."""
    if not isinstance(fraction, numbers.Real) or isinstance(fraction, bool) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    y = _multi_hot(y)  # (n, C) bool
    order, n_cover = _cached_order(y.tobytes(), y.shape, int(seed))
    size = max(math.floor(fraction * len(order) + 0.5), n_cover)  # round half up; never drop a class
    return np.sort(order[:size])


def balanced_subset(y: np.ndarray, n_per_class: int, seed: int,
                    classes: Sequence[str] | None = None) -> np.ndarray:
    """Sorted positions of n_per_class random records of every class of integer labels y; nested in n."""
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be a 1-D integer label array, got {y.dtype} {y.shape}")
    if not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive integer, got {n_per_class!r}")
    n_classes = len(classes) if classes is not None else int(y.max()) + 1
    names = list(classes) if classes is not None else [f"class {c}" for c in range(n_classes)]
    members = [np.flatnonzero(y == c) for c in range(n_classes)]
    short = [f"{names[c]} has {len(m)}" for c, m in enumerate(members) if len(m) < n_per_class]
    if short:
        raise ValueError(f"too few records for n_per_class={n_per_class}: {', '.join(short)}")
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(m)[:n_per_class] for m in members]  # fixed permutation sizes: nested in n
    return np.sort(np.concatenate(picks))
