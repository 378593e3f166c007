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
    cells = add_paired_vs(build_cells(rows, "macro_f1", ("track",)), "macro_f1", "scratch_noaug")
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
    assert "67 %" in scratch


def test_fewshot_plot_tells_one_track_at_two_n_apart():
    cells = [{"track": "scratch", "n_labelled": 70}, {"track": "ssl", "n_labelled": 70},
             {"track": "scratch", "n_labelled": 300}]
    assert condition_names(cells) == ["scratch\nN=70", "ssl\nN=70", "scratch\nN=300"]


@pytest.mark.parametrize("which", ["scarcity", "fewshot"])
def test_plots_write_png(tmp_path, which):
    fn, res = (plot_scarcity, _scarcity()) if which == "scarcity" else (plot_fewshot, _fewshot())
    out = fn(res, tmp_path / f"{which}.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert os.listdir(tmp_path) == [f"{which}.png"]


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
    assert "100 % (p=1.000)" in ssl_running  # both collapse in every seed: Fisher's p is 1
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
