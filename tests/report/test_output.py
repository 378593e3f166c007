"""Atomic writes, tables and plots."""

import json
import os

import pytest

from ssrl.report import (
    add_paired_vs,
    build_cells,
    plot_fewshot,
    plot_scarcity,
    results_markdown,
    results_table_text,
    write_json_atomic,
    write_text_atomic,
)
from ssrl.report.plots import condition_names


def test_json_atomic_keeps_old_file_on_crash(tmp_path):
    p = tmp_path / "results.json"
    write_json_atomic(p, {"a": 1, "nan": float("nan")})
    assert json.loads(p.read_text()) == {"a": 1, "nan": None}
    with pytest.raises(TypeError):
        write_json_atomic(p, {"a": 2, "bad": object()})  # json.dump fails mid-write
    assert json.loads(p.read_text()) == {"a": 1, "nan": None}
    assert os.listdir(tmp_path) == ["results.json"]  # no temp file left behind


def test_text_atomic(tmp_path):
    p = tmp_path / "sub" / "t.md"
    write_text_atomic(p, "hello\n")
    write_text_atomic(p, "world\n")
    assert p.read_text() == "world\n" and os.listdir(p.parent) == ["t.md"]


def _scarcity():
    rows = [{"track": t, "fraction": f, "n_labelled": int(1700 * f), "seed": s,
             "test_macro_auroc": 0.8 + 0.1 * f + 0.01 * (t == "ssl_finetune") + 0.001 * s % 3,
             "best_epoch": 7, "collapsed": False, "status": "ok"}
            for t in ("supervised", "ssl_finetune") for f in (0.01, 0.1, 1.0) for s in (42, 52, 62)]
    rows.append({"track": "ssl_finetune", "fraction": 1.0, "seed": 72, "status": "failed",
                 "error": "worker died"})
    cells = add_paired_vs(build_cells(rows, "test_macro_auroc"), "test_macro_auroc")
    return {"sweep": "scarcity", "metric": "test_macro_auroc", "cells": cells}


def _fewshot():
    rows = [{"track": t, "n_labelled": n, "seed": s, "macro_f1": v, "best_epoch": e,
             "collapsed": e <= 1}
            for t, n, vals in [("scratch_noaug", 70, [(0.1, 1), (0.2, 6), (0.12, 1)]),
                               ("ssl_noaug", 70, [(0.3, 5), (0.32, 9), (0.31, 4)]),
                               ("balanced_n300", 300, [(0.4, 8)])]
            for s, (v, e) in zip((42, 52, 62), vals)]
    cells = add_paired_vs(build_cells(rows, "macro_f1", ("track", "n_labelled")), "macro_f1", "scratch_noaug")
    return {"sweep": "fewshot", "metric": "macro_f1", "baseline_track": "scratch_noaug",
            "trivial_baseline": {"name": "always SR", "value": 0.181}, "cells": cells}


def test_markdown_scarcity():
    md = results_markdown(_scarcity())
    lines = md.splitlines()
    assert lines[0] == "### scarcity: test_macro_auroc"
    table = [ln for ln in lines if ln.startswith("|")]
    assert len(table) == 2 + 6  # header, rule, 6 cells
    assert "10 %" in md and "Δ supervised" in md and "1 (seed 72)" in md
    assert len({len(ln) for ln in table}) == 1  # padded: columns line up in a terminal
    assert "### " not in results_table_text(_scarcity())


def test_markdown_fewshot_has_trivial_baseline_and_na():
    md = results_markdown(_fewshot())
    assert "Trivial baseline (always SR): macro_f1 0.1810" in md
    assert "fraction" not in md.splitlines()[2]
    n300 = next(ln for ln in md.splitlines() if ln.startswith("| balanced_n300"))
    assert "n/a" in n300 and "300" in n300  # one seed: std and CI undefined
    scratch = next(ln for ln in md.splitlines() if ln.startswith("| scratch_noaug"))
    assert "| 2/3 " in scratch  # collapsed seeds of all, as counts


def test_fewshot_plot_tells_one_track_at_two_n_apart():
    cells = [{"track": "scratch", "n_labelled": 70}, {"track": "ssl", "n_labelled": 70},
             {"track": "scratch", "n_labelled": 300}]
    assert condition_names(cells) == ["scratch\nN=70", "ssl\nN=70", "scratch\nN=300"]


def test_plots_write_png(tmp_path):
    """_save writes the PNG under its final name only (via a temp name it removes)."""
    out = plot_fewshot(_fewshot(), tmp_path / "fewshot.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["fewshot.png"]


def _drawn(monkeypatch, plot, results: dict):
    """The figure a plot function draws, captured where it would be saved."""
    from ssrl.report import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    plot(results, "unused.png")
    (fig,) = figures
    return fig


def test_fewshot_plot_draws_each_cell(monkeypatch):
    """Bars are the cell means, points the seeds, the dashed line the trivial baseline, and the right-hand
    bars the collapse rates in % (numbers from _fewshot's rows: collapsed means best epoch <= 1)."""
    from matplotlib.collections import PathCollection

    ax1, ax2 = _drawn(monkeypatch, plot_fewshot, _fewshot()).axes
    names = ["scratch_noaug\nN=70", "ssl_noaug\nN=70", "balanced_n300\nN=300"]
    assert [t.get_text() for t in ax1.get_xticklabels()] == [t.get_text() for t in ax2.get_xticklabels()] == names
    assert [b.get_height() for b in ax1.patches] == pytest.approx([(0.1 + 0.2 + 0.12) / 3, 0.31, 0.4])
    points = [sorted(c.get_offsets()[:, 1]) for c in ax1.collections if isinstance(c, PathCollection)]
    assert points == [pytest.approx([0.1, 0.12, 0.2]), pytest.approx([0.3, 0.31, 0.32]), pytest.approx([0.4])]
    (trivial,) = [ln for ln in ax1.get_lines() if ln.get_linestyle() == "--"]
    assert list(trivial.get_ydata()) == [0.181, 0.181]
    assert [t.get_text() for t in ax1.get_legend().get_texts()] == ["trivial: always SR (0.181)"]
    assert [b.get_height() for b in ax2.patches] == pytest.approx([100 * 2 / 3, 0.0, 0.0])
    assert [t.get_text() for t in ax2.texts] == ["67 %", "0 %", "0 %"]


def test_scarcity_plot_draws_each_track(monkeypatch):
    """One line per track through its mean at each fraction (log x), three seed points per cell; the failed
    seed 72 is not drawn."""
    from matplotlib.collections import PathCollection

    (ax,) = _drawn(monkeypatch, plot_scarcity, _scarcity()).axes
    assert ax.get_xscale() == "log"
    seeds = 0.001 * (42 + 52 + 62) / 3  # the rows' seed term, 0.001 * s % 3, averaged
    for track, bonus in (("supervised", 0.0), ("ssl_finetune", 0.01)):
        (line,) = [ln for ln in ax.get_lines() if ln.get_label() == track]
        assert list(line.get_xdata()) == [0.01, 0.1, 1.0]
        assert list(line.get_ydata()) == pytest.approx([0.8 + 0.1 * f + bonus + seeds for f in (0.01, 0.1, 1.0)])
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(points) == 6 and all(len(c.get_offsets()) == 3 for c in points)


def test_fewshot_tables_show_bn_stats_fisher_and_na_collapse():
    from ssrl.report import add_fewshot_contrasts
    from ssrl.report.reference import fewshot_table

    rows = [{"track": t, "bn_stats": bn, "n_labelled": 70, "seed": s, "test_macro_f1": 0.1 + 0.01 * s,
             "collapsed": (None if t == "frozen_probe" else bn == "running"), "test_single_class": bn == "running"}
            for t in ("scratch", "ssl", "frozen_probe") for bn in ("precise", "running") for s in (1, 2, 3)]
    cells = add_fewshot_contrasts(build_cells(rows, "test_macro_f1", ("track", "n_labelled", "bn_stats")),
                                  "test_macro_f1")
    res = {"sweep": "fewshot", "metric": "test_macro_f1", "baseline_track": "scratch", "cells": cells}
    md = results_markdown(res)
    assert "BN stats" in md and "Fisher p vs scratch" in md
    ssl_running = next(ln for ln in md.splitlines() if ln.startswith("| ssl ") and "running" in ln)
    assert "3/3 (p=1.000)" in ssl_running  # both collapse in every seed: Fisher's p is 1
    assert "- scratch at N=70: running − precise test_macro_f1 +0.0000" in md
    frozen = next(ln for ln in md.splitlines() if ln.startswith("| frozen_probe") and "precise" in ln)
    assert "| n/a " in frozen
    ref = fewshot_table(res)
    scratch_rows = [ln for ln in ref.splitlines() if ln.startswith("| scratch |")]
    assert "0.115 ± 0.072" in scratch_rows[1] and "0.115" not in scratch_rows[0]  # the claim beside its protocol


def test_fewshot_plot_names_the_running_protocol():
    assert condition_names([{"track": "scratch", "n_labelled": 70, "bn_stats": "running"}]) == [
        "scratch\nN=70\nrunning BN"]


def _two_methods() -> dict:
    from ssrl.report import add_method_contrasts

    rows = [{"track": t, "method": m, "fraction": f, "seed": s, "best_epoch": 3, "collapsed": False,
             "test_macro_auroc": 0.7 + 0.1 * f + {"simclr": 0.01, "masked": 0.02}.get(m, 0.0) + 0.001 * (s % 7)}
            for t, m in (("supervised", None), ("ssl_finetune", "simclr"), ("ssl_finetune", "masked"))
            for f in (0.01, 0.1) for s in (42, 52, 62)]
    cells = build_cells(rows, "test_macro_auroc", ("track", "method", "fraction"))
    add_paired_vs(cells, "test_macro_auroc")
    add_method_contrasts(cells, "test_macro_auroc", ("simclr", "masked"), ("fraction",))
    return {"sweep": "scarcity", "metric": "test_macro_auroc", "baseline_track": "supervised", "cells": cells}


def test_tables_and_plots_name_each_method(tmp_path, monkeypatch):
    """One row and one plot line per (SSL track, method); the method contrast printed under the table."""
    from ssrl.report import plots

    md = results_markdown(_two_methods())
    rows = [ln.split("|")[1].strip() for ln in md.splitlines() if ln.startswith("| ") and "track" not in ln]
    assert rows == ["supervised"] * 2 + ["ssl_finetune[simclr]"] * 2 + ["ssl_finetune[masked]"] * 2
    contrasts = [ln for ln in md.splitlines() if ln.startswith("- ssl_finetune at ")]
    assert len(contrasts) == 2 and all("masked − simclr test_macro_auroc +0.0100 " in ln for ln in contrasts)
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    plots.plot_scarcity(_two_methods(), tmp_path / "s.png")
    (ax,) = figures[0].axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["supervised", "ssl_finetune[simclr]",
                                                                   "ssl_finetune[masked]"]
    masked = next(line for line in ax.get_lines() if line.get_label() == "ssl_finetune[masked]")
    assert list(masked.get_ydata()) == pytest.approx([c["mean"] for c in _two_methods()["cells"]
                                                      if c.get("method") == "masked"])


def test_batchnorm_artefact_lines_name_the_method():
    """With two methods the same SSL condition runs twice under each protocol: each line says which method."""
    from ssrl.kinds import FEWSHOT

    rows = [{"track": t, "method": m, "n_labelled": 70, "bn_stats": bn, "seed": s, "macro_f1": v + 0.01 * s,
             "collapsed": False}
            for t, m, bn, v in (("scratch", None, "precise", 0.2), ("ssl", "simclr", "precise", 0.25),
                                ("ssl", "simclr", "running", 0.35), ("ssl", "masked", "precise", 0.3),
                                ("ssl", "masked", "running", 0.2))
            for s in (1, 2, 3)]
    cells = FEWSHOT.cells(rows, "macro_f1", ["simclr", "masked"])
    md = results_markdown({"sweep": "fewshot", "metric": "macro_f1", "baseline_track": "scratch", "cells": cells})
    assert "- ssl[simclr] at N=70: running − precise macro_f1 +0.1000" in md
    assert "- ssl[masked] at N=70: running − precise macro_f1 -0.1000" in md


def test_contrast_shows_raw_and_adjusted_p_and_stars_only_after_adjustment():
    from ssrl.report.tables import fmt_contrast

    d = {"mean_diff": 0.05, "ci95": [0.02, 0.08], "p_value": 0.0001, "n_pairs": 5}
    assert fmt_contrast({**d, "p_holm": 0.0004}) == "+0.0500* [+0.0200, +0.0800] p<0.001 (Holm <0.001) (n=5)"
    assert fmt_contrast({**d, "p_holm": 0.06}) == "+0.0500 [+0.0200, +0.0800] p<0.001 (Holm 0.060) (n=5)"
    assert fmt_contrast(d) == "+0.0500 [+0.0200, +0.0800] p<0.001 (n=5)"  # a file without adjustment: no star
