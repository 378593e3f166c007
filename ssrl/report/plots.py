"""PNG figures of a results.json dict (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ssrl.atomic import atomic_open
from ssrl.report.tables import cell_label  # noqa: E402


def _tracks(cells: list[dict]) -> list[str]:
    """Track labels (an SSL track once per pretraining method: one line each) in first-appearance order."""
    return list(dict.fromkeys(cell_label(c) for c in cells))


def condition_names(cells: list[dict]) -> list[str]:
    """Axis labels of few-shot cells: the track with its N (one track runs at several N), and 'running BN'
    for the reference protocol's BatchNorm statistics."""
    names = [f"{cell_label(c)}\nN={c['n_labelled']}" if c.get("n_labelled") is not None
             else cell_label(c) for c in cells]
    return [n + ("\nrunning BN" if c.get("bn_stats") == "running" else "") for n, c in zip(names, cells)]


def _save(fig: Any, path: str | os.PathLike) -> Path:
    """Save a figure as PNG through the atomic writer; the figure is closed whatever happens."""
    try:
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=130, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def plot_scarcity(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Metric vs label fraction (log x) per track: mean line, ±std band, per-seed points."""
    metric = results.get("metric", "metric")
    cells = [c for c in results.get("cells", []) if c.get("fraction") is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for i, track in enumerate(_tracks(cells)):
        color = f"C{i}"
        mine = sorted((c for c in cells if cell_label(c) == track), key=lambda c: c["fraction"])
        done = [c for c in mine if c.get("mean") is not None]
        x = np.array([c["fraction"] for c in done], dtype=float)
        m = np.array([c["mean"] for c in done], dtype=float)
        s = np.array([c["std"] or 0.0 for c in done], dtype=float)
        ax.plot(x, m, "-o", color=color, label=track, ms=4)
        ax.fill_between(x, m - s, m + s, color=color, alpha=0.15, lw=0)
        jitter = 1.0 + 0.04 * (i - len(_tracks(cells)) / 2) / max(len(_tracks(cells)), 1)
        for c in done:
            ys = [r[metric] for r in c.get("per_seed", []) if r.get(metric) is not None]
            ax.scatter([c["fraction"] * jitter] * len(ys), ys, color=color, s=10, alpha=0.6, lw=0)
    ax.set_xscale("log")
    fracs = sorted({c["fraction"] for c in cells})
    if fracs:
        ax.set_xticks(fracs, [f"{100 * f:g} %" for f in fracs])
        ax.minorticks_off()
    ax.set_xlabel("labelled fraction of the training pool")
    ax.set_ylabel(metric)
    ax.set_title(f"{results.get('sweep', 'scarcity')}: mean ± std over seeds, points = seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_fewshot(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Per condition: metric bars with seed points (trivial baseline dashed) and collapse rate."""
    metric = results.get("metric", "macro_f1")
    cells = results.get("cells", [])
    names = condition_names(cells)
    x = np.arange(len(cells))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(7.0, 1.6 * len(cells) + 3), 4.0),
                                   gridspec_kw={"width_ratios": [3, 2]}, layout="constrained")
    means = [c.get("mean") if c.get("mean") is not None else 0.0 for c in cells]
    stds = [c.get("std") or 0.0 for c in cells]
    ax1.bar(x, means, yerr=stds, color=[f"C{i}" for i in range(len(cells))], alpha=0.6, capsize=3)
    for i, c in enumerate(cells):
        ys = [r[metric] for r in c.get("per_seed", []) if r.get(metric) is not None]
        ax1.scatter(i + np.linspace(-0.15, 0.15, len(ys)) if len(ys) > 1 else [i] * len(ys), ys,
                    color="k", s=12, zorder=3)
    trivial = results.get("trivial_baseline")
    if trivial and trivial.get("value") is not None:
        ax1.axhline(trivial["value"], ls="--", color="0.3", lw=1,
                    label=f"trivial: {trivial.get('name', 'constant')} ({trivial['value']:.3f})")
        ax1.legend(fontsize=8)
    ax1.set_xticks(x, names, rotation=20, ha="right")
    ax1.set_ylabel(metric)
    ax1.set_title("mean ± std, points = seeds")
    rates = [c.get("collapse_rate") for c in cells]
    ax2.bar(x, [100 * (r or 0.0) for r in rates], color="C3", alpha=0.7)
    for i, r in enumerate(rates):
        ax2.text(i, 100 * (r or 0.0) + 2, "n/a" if r is None else f"{100 * r:.0f} %", ha="center", fontsize=8)
    ax2.set_ylim(0, 110)
    ax2.set_xticks(x, names, rotation=45, ha="right", fontsize=8)  # the narrower panel: labels would overlap
    ax2.set_ylabel("collapse rate (%)")
    ax2.set_title("collapse: best val epoch <= 1")
    for ax in (ax1, ax2):
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{results.get('sweep', 'fewshot')}", fontsize=10)
    return _save(fig, path)
