"""Statistics against values computed by hand."""

import math
import statistics
import warnings

import pytest

from ssrl.report import add_paired_vs, build_cells, constant_macro_f1, paired_difference, summarize

T_975_DF2 = 4.302653  # Student t 97.5 % quantile, 2 degrees of freedom (table value)


def test_summarize_t_interval_by_hand():
    s = summarize([1.0, 2.0, 3.0])
    # mean 2, sd 1, half-width t * sd / sqrt(n) = 4.302653 / sqrt(3) = 2.484138
    assert s["n"] == 3 and s["mean"] == pytest.approx(2.0) and s["std"] == pytest.approx(1.0)
    assert s["ci95"] == pytest.approx([2 - 2.484138, 2 + 2.484138], abs=1e-5)


def test_summarize_small_sd_on_the_logit_scale():
    """Values in [0, 1]: a t interval of the logits, mapped back (by hand: logit, mean, sd, t, expit)."""
    s = summarize([0.85, 0.87, 0.86])
    z = [math.log(v / (1 - v)) for v in (0.85, 0.87, 0.86)]
    h = T_975_DF2 * statistics.stdev(z) / math.sqrt(3)
    expit = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert s["mean"] == pytest.approx(0.86) and s["std"] == pytest.approx(0.01)
    assert s["ci95"] == pytest.approx([expit(statistics.mean(z) - h), expit(statistics.mean(z) + h)], abs=1e-7)  # t from a table


def test_intervals_of_a_bounded_metric_stay_inside_it():
    """Three AUROCs near 0.92 with a wide spread: the plain t interval reached 1.11; this one stays in [0, 1]
    and holds the mean, also with a value at 0 (a collapsed run's macro-F1)."""
    for values in ([0.9713, 0.8213, 0.9713], [0.0, 0.03, 0.2], [1.0, 0.99, 0.97]):
        s = summarize(values)
        assert 0.0 <= s["ci95"][0] <= s["mean"] <= s["ci95"][1] <= 1.0, (values, s)


def test_summarize_degenerate_is_json_safe():
    assert summarize([0.7]) == {"n": 1, "mean": 0.7, "std": None, "ci95": None}
    assert summarize([]) == {"n": 0, "mean": None, "std": None, "ci95": None}
    s = summarize([0.5, 0.5])
    assert s["std"] == 0.0 and s["ci95"] == [0.5, 0.5]
    with pytest.raises(ValueError, match="NaN"):
        summarize([0.5, float("nan")])


def test_paired_difference_by_hand():
    d = paired_difference([0.87, 0.88, 0.86], [0.85, 0.87, 0.83])
    # differences 0.02, 0.01, 0.03: mean 0.02, sd 0.01, t = 0.02 / (0.01/sqrt 3) = sqrt(12)
    # df = 2 has a closed form: p = 1 - t / sqrt(t^2 + 2) = 1 - sqrt(12/14)
    h = T_975_DF2 * 0.01 / math.sqrt(3)
    assert d["n_pairs"] == 3 and d["mean_diff"] == pytest.approx(0.02)
    assert d["ci95"] == pytest.approx([0.02 - h, 0.02 + h], abs=1e-6)
    assert d["p_value"] == pytest.approx(1 - math.sqrt(12 / 14), abs=1e-6)


def test_paired_difference_degenerate_no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = paired_difference([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
        shift = paired_difference([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])
        one = paired_difference([0.6], [0.5])
    assert same == {"n_pairs": 3, "mean_diff": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0}
    assert shift["mean_diff"] == pytest.approx(0.1) and shift["p_value"] is None
    assert one == {"n_pairs": 1, "mean_diff": pytest.approx(0.1), "ci95": None, "p_value": None}
    with pytest.raises(ValueError, match="length"):
        paired_difference([1, 2], [1])


def _row(track, frac, seed, auc, best_epoch=5, collapsed=False, status="ok", error=None):
    return {"track": track, "fraction": frac, "n_labelled_used": int(1700 * frac), "seed": seed,
            "test_macro_auroc": auc, "best_epoch": best_epoch, "collapsed": collapsed,
            "status": status, "error": error}


def test_build_cells_and_paired_vs():
    rows = [
        _row("ssl_finetune", 0.1, 42, 0.87, 3), _row("supervised", 0.1, 62, 0.83),
        _row("supervised", 0.1, 42, 0.85), _row("supervised", 0.1, 52, 0.87),
        _row("ssl_finetune", 0.1, 52, 0.88, 4, collapsed=True),
        _row("ssl_finetune", 0.1, 62, None, status="failed", error="CUDA OOM"),
        _row("supervised", 1.0, 42, 0.92), _row("ssl_finetune", 1.0, 42, 0.93),
        _row("ssl_finetune", 0.1, 72, float("nan")),  # 'ok' but NaN: counted as failed
    ]
    cells = build_cells(rows, "test_macro_auroc", ("track", "fraction"))
    assert [(c["track"], c["fraction"]) for c in cells] == [
        ("ssl_finetune", 0.1), ("ssl_finetune", 1.0), ("supervised", 0.1), ("supervised", 1.0)]
    sup = cells[2]
    assert sup["seeds"] == [42, 52, 62] and sup["n_labelled_used"] == 170 and "n_labelled" not in sup
    assert sup["mean"] == pytest.approx(0.85) and sup["std"] == pytest.approx(0.02)
    assert sup["collapse_rate"] == 0.0 and sup["n_failed"] == 0 and sup["failed"] == []
    assert [r["seed"] for r in sup["per_seed"]] == [42, 52, 62]
    assert set(sup["per_seed"][0]) >= {"seed", "test_macro_auroc", "best_epoch", "collapsed"}
    ssl = cells[0]
    assert ssl["seeds"] == [42, 52] and ssl["n_failed"] == 2
    assert ssl["failed"][0] == {"seed": 62, "error": "CUDA OOM"}
    assert "not finite" in ssl["failed"][1]["error"]
    assert ssl["collapse_rate"] == 0.5 and ssl["best_epoch_mean"] == 3.5

    add_paired_vs(cells, "test_macro_auroc")
    vs = ssl["vs_supervised"]
    # common seeds 42, 52: differences 0.02, 0.01 -> mean 0.015
    assert vs["n_pairs"] == 2 and vs["mean_diff"] == pytest.approx(0.015)
    assert vs["p_value"] is not None and 0 < vs["p_value"] < 1
    assert cells[1]["vs_supervised"]["n_pairs"] == 1 and cells[1]["vs_supervised"]["ci95"] is None
    assert "vs_supervised" not in sup


def test_build_cells_without_fraction_and_duplicate_seed():
    rows = [{"track": "scratch", "n_labelled": 70, "seed": s, "macro_f1": f, "best_epoch": e,
             "collapsed": e <= 1} for s, f, e in [(1, 0.1, 1), (2, 0.3, 8)]]
    (cell,) = build_cells(rows, "macro_f1", ("track", "fraction"))
    assert "fraction" not in cell and cell["collapse_rate"] == 0.5
    with pytest.raises(ValueError, match="more than one"):
        build_cells(rows + rows[:1], "macro_f1", ("track",))


def test_constant_macro_f1_by_hand():
    # always class 0 on 6x class 0 + one each of 1..4: F1_0 = 2*0.6*1/1.6 = 0.75, others 0
    assert constant_macro_f1([0] * 6 + [1, 2, 3, 4], 0, 5) == pytest.approx(0.15)


def _fs_row(track, bn, n, seed, f1, collapsed, single=False):
    return {"track": track, "bn_stats": bn, "n_labelled": n, "seed": seed, "test_macro_f1": f1,
            "collapsed": collapsed, "test_single_class": single, "best_epoch": 1 if collapsed else 6}


FEWSHOT_ROWS = [
    # scratch with precise statistics: no collapse; ssl: one seed more than scratch (unpaired), rows shuffled
    _fs_row("scratch", "precise", 70, 52, 0.25, False), _fs_row("scratch", "precise", 70, 42, 0.22, False),
    _fs_row("scratch", "precise", 70, 62, 0.24, False),
    _fs_row("ssl", "precise", 70, 62, 0.30, False), _fs_row("ssl", "precise", 70, 42, 0.27, True),
    _fs_row("ssl", "precise", 70, 52, 0.26, False), _fs_row("ssl", "precise", 70, 72, 0.90, False),
    # the reference protocol: scratch collapses in every seed and predicts one class
    *[_fs_row("scratch", "running", 70, s, 0.03, True, True) for s in (42, 52, 62)],
    _fs_row("ssl", "running", 70, 42, 0.19, False), _fs_row("ssl", "running", 70, 52, 0.20, False),
    _fs_row("ssl", "running", 70, 62, 0.18, True),
    _fs_row("scratch", "precise", 300, 42, 0.35, False),
]


def test_fewshot_contrasts_recompute_from_per_seed_values():
    from scipy import stats

    from ssrl.report import add_fewshot_contrasts

    cells = add_fewshot_contrasts(build_cells(FEWSHOT_ROWS, "test_macro_f1", ("track", "n_labelled", "bn_stats")),
                                  "test_macro_f1")
    by = {(c["track"], c["n_labelled"], c["bn_stats"]): c for c in cells}
    ssl = by[("ssl", 70, "precise")]
    # paired by seed against scratch at the same N and bn_stats: seeds 42, 52, 62 (72 has no partner)
    a, b = [0.27, 0.26, 0.30], [0.22, 0.25, 0.24]
    d = [x - y for x, y in zip(a, b)]
    h = T_975_DF2 * statistics.stdev(d) / math.sqrt(3)
    assert ssl["vs_scratch"]["n_pairs"] == 3
    assert ssl["vs_scratch"]["mean_diff"] == pytest.approx(statistics.mean(d))
    assert ssl["vs_scratch"]["ci95"] == pytest.approx([statistics.mean(d) - h, statistics.mean(d) + h])
    assert ssl["vs_scratch"]["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    # Fisher's exact test on collapsed / not collapsed over all successful seeds of both cells
    assert ssl["collapse_vs_scratch_p"] == pytest.approx(stats.fisher_exact([[1, 3], [0, 3]]).pvalue)
    run = by[("ssl", 70, "running")]
    assert run["vs_scratch"]["mean_diff"] == pytest.approx(statistics.mean([0.19 - 0.03, 0.20 - 0.03, 0.18 - 0.03]))
    assert run["collapse_vs_scratch_p"] == pytest.approx(stats.fisher_exact([[1, 2], [3, 0]]).pvalue)
    # the BatchNorm artefact: running against precise statistics, same track and N
    scr = by[("scratch", 70, "running")]
    assert scr["vs_precise"]["mean_diff"] == pytest.approx(statistics.mean([0.03 - 0.22, 0.03 - 0.25, 0.03 - 0.24]))
    assert scr["collapse_vs_precise_p"] == pytest.approx(stats.fisher_exact([[3, 0], [0, 3]]).pvalue)
    assert scr["collapse_rate"] == 1.0 and scr["single_class_rate"] == 1.0 and ssl["single_class_rate"] == 0.0
    assert "vs_scratch" not in by[("scratch", 70, "precise")] and "vs_precise" not in ssl
    assert "vs_scratch" not in by[("scratch", 300, "precise")]  # the baseline itself


def test_frozen_tracks_have_no_collapse_rate():
    rows = [{"track": "ssl_frozen", "fraction": 0.1, "seed": s, "test_macro_auroc": 0.8, "collapsed": None,
             "best_epoch": 1} for s in (1, 2)]
    cell = build_cells(rows, "test_macro_auroc")[0]
    assert cell["collapse_rate"] is None and cell["best_epoch_mean"] == 1.0


def test_cells_without_bn_stats_compare_with_precise_scratch():
    from ssrl.report import add_fewshot_contrasts

    rows = FEWSHOT_ROWS + [{"track": "hrv_logreg", "n_labelled": 70, "seed": s, "test_macro_f1": f,
                            "collapsed": None} for s, f in ((42, 0.30), (52, 0.31), (62, 0.20))]
    cells = add_fewshot_contrasts(build_cells(rows, "test_macro_f1", ("track", "n_labelled", "bn_stats")),
                                  "test_macro_f1")
    hrv = next(c for c in cells if c["track"] == "hrv_logreg")
    assert "bn_stats" not in hrv and hrv["collapse_rate"] is None and hrv["collapse_vs_scratch_p"] is None
    assert hrv["vs_scratch"]["mean_diff"] == pytest.approx(statistics.mean([0.30 - 0.22, 0.31 - 0.25, 0.20 - 0.24]))


def test_methods_compare_paired_at_the_same_cell_and_each_against_supervised():
    """Two pretraining methods at two fractions: between_methods recomputes from the per-seed values, pairs
    only seeds both methods hold, never crosses fractions or tracks, and leaves the first method alone."""
    from scipy import stats

    from ssrl.report import add_method_contrasts

    auroc = {("supervised", None, 0.1): [0.80, 0.82, 0.81], ("ssl_finetune", "simclr", 0.1): [0.84, 0.83, 0.86],
             ("ssl_finetune", "masked", 0.1): [0.85, 0.86, 0.90], ("ssl_frozen", "simclr", 0.1): [0.70, 0.71, 0.72],
             ("ssl_frozen", "masked", 0.1): [0.60, 0.65, 0.61], ("ssl_finetune", "simclr", 1.0): [0.90, 0.91, 0.92],
             ("ssl_finetune", "masked", 1.0): [0.93, 0.91]}  # seed 62 of masked at 100 % failed
    rows = [{"track": t, "method": m, "fraction": f, "seed": s, "test_macro_auroc": v}
            for (t, m, f), vals in auroc.items() for s, v in zip((42, 52, 62), vals)]
    cells = build_cells(rows, "test_macro_auroc", ("track", "method", "fraction"))
    add_paired_vs(cells, "test_macro_auroc", "supervised", ("fraction",))
    add_method_contrasts(cells, "test_macro_auroc", ("simclr", "masked"), ("fraction",))
    by = {(c["track"], c.get("method"), c["fraction"]): c for c in cells}
    assert "method" not in by[("supervised", None, 0.1)] and "between_methods" not in by[("supervised", None, 0.1)]
    for key in auroc:
        assert ("between_methods" in by[key]) == (key[1] == "masked")
    a, b = auroc[("ssl_finetune", "masked", 0.1)], auroc[("ssl_finetune", "simclr", 0.1)]
    diff = by[("ssl_finetune", "masked", 0.1)]["between_methods"]["simclr"]
    assert diff["mean_diff"] == pytest.approx(statistics.mean(x - y for x, y in zip(a, b)))
    assert diff["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue) and diff["n_pairs"] == 3
    frozen = by[("ssl_frozen", "masked", 0.1)]["between_methods"]["simclr"]  # same track only
    assert frozen["mean_diff"] == pytest.approx(statistics.mean([0.60 - 0.70, 0.65 - 0.71, 0.61 - 0.72]))
    full = by[("ssl_finetune", "masked", 1.0)]["between_methods"]["simclr"]  # same fraction, common seeds
    assert full["n_pairs"] == 2 and full["mean_diff"] == pytest.approx(statistics.mean([0.93 - 0.90, 0.91 - 0.91]))
    # and each method against supervised, paired the same way
    vs = by[("ssl_finetune", "masked", 0.1)]["vs_supervised"]
    assert vs["mean_diff"] == pytest.approx(statistics.mean(x - y for x, y in zip(a, auroc[("supervised", None, 0.1)])))


def test_holm_by_hand():
    from ssrl.report.stats import holm

    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 0.5 x 2 caps at 1; the running max carries it
    assert holm([]) == []


def test_controls_and_holm_families_in_a_fewshot_file():
    """Every deep condition is compared with hrv_logreg at its N and with the zero-label rule; the file's
    p-values are adjusted within two families (paired metric contrasts, Fisher collapse tests)."""
    from ssrl.report import add_fewshot_contrasts
    from ssrl.report.stats import add_holm, holm

    rows = FEWSHOT_ROWS + [{"track": "hrv_logreg", "n_labelled": 70, "seed": s, "test_macro_f1": f}
                           for s, f in ((42, 0.30), (52, 0.31), (62, 0.20))]
    rows += [{"track": "hr_rule", "n_labelled": 0, "seed": s, "test_macro_f1": 0.27} for s in (42, 52, 62)]
    cells = add_fewshot_contrasts(build_cells(rows, "test_macro_f1", ("track", "n_labelled", "bn_stats")),
                                  "test_macro_f1")
    by = {(c["track"], c.get("n_labelled"), c.get("bn_stats")): c for c in cells}
    scratch = by[("scratch", 70, "precise")]
    assert scratch["vs_hrv_logreg"]["mean_diff"] == pytest.approx(statistics.mean([0.22 - 0.30, 0.25 - 0.31,
                                                                                   0.24 - 0.20]))
    assert scratch["vs_hr_rule"]["mean_diff"] == pytest.approx(statistics.mean([0.22, 0.25, 0.24]) - 0.27)
    rule = by[("hr_rule", 0, None)]
    assert not any(k.startswith("vs_") for k in rule)  # the rule has no scratch or logreg at N = 0
    assert "vs_hrv_logreg" not in by[("hrv_logreg", 70, None)] and "vs_hr_rule" in by[("hrv_logreg", 70, None)]
    account = add_holm(cells)
    contrasts = [d for c in cells for k, d in c.items() if k.startswith("vs_") and d.get("p_value") is not None]
    fisher = [(c, k) for c in cells for k in list(c) if k.startswith("collapse_") and k.endswith("_p")
              and c[k] is not None]
    assert account["families"] == {"paired metric contrasts": len(contrasts), "collapse (Fisher)": len(fisher)}
    assert [d["p_holm"] for d in contrasts] == pytest.approx(holm([d["p_value"] for d in contrasts]))
    assert all(c[k + "_holm"] >= c[k] for c, k in fisher)
    assert add_holm(cells) == account  # idempotent: adjusting twice changes nothing


def test_frozen_ssl_tracks_are_compared_with_the_frozen_random_control():
    """Scarcity: ssl_frozen (and only it) gets vs_random_frozen at the same fraction, paired by seed."""
    from ssrl.kinds import kind_of

    auroc = {"supervised": [0.80, 0.82, 0.81], "ssl_frozen": [0.78, 0.79, 0.77], "random_frozen": [0.70, 0.74, 0.71],
             "ssl_finetune": [0.83, 0.84, 0.82]}
    rows = [{"track": t, "method": "simclr" if t.startswith("ssl") else None, "fraction": 0.1, "seed": s,
             "test_macro_auroc": v} for t, vals in auroc.items() for s, v in zip((42, 52, 62), vals)]
    cells = {c["track"]: c for c in kind_of("scarcity").cells(rows, "test_macro_auroc", ["simclr"])}
    assert cells["ssl_frozen"]["vs_random_frozen"]["mean_diff"] == pytest.approx(
        statistics.mean([0.78 - 0.70, 0.79 - 0.74, 0.77 - 0.71]))
    assert not any("vs_random_frozen" in cells[t] for t in ("supervised", "ssl_finetune", "random_frozen"))


def test_a_pretrained_embedding_beside_the_features_is_compared_with_a_random_ones():
    """Few-shot: hybrid[method] (and only it) gets vs_hybrid_random at the same N, paired by seed, inside the
    file's family of paired contrasts."""
    from ssrl.kinds import kind_of

    f1 = {("scratch", None, 70): [0.30, 0.28, 0.31], ("hybrid", "masked", 70): [0.40, 0.36, 0.41],
          ("hybrid_random", None, 70): [0.33, 0.31, 0.35], ("hybrid", "masked", 300): [0.50, 0.49, 0.52],
          ("hybrid_random", None, 300): [0.41, 0.44, 0.43], ("scratch", None, 300): [0.42, 0.40, 0.43]}
    rows = [{"track": t, "method": m, "n_labelled": n, "seed": s, "test_macro_f1": v,
             "bn_stats": "precise" if t == "scratch" else None, "collapsed": False if t == "scratch" else None}
            for (t, m, n), vals in f1.items() for s, v in zip((42, 52, 62), vals)]
    res = kind_of("fewshot").cells(rows, "test_macro_f1", ["masked"])
    cells = {(c["track"], c["n_labelled"]): c for c in res}
    for n in (70, 300):
        d = [a - b for a, b in zip(f1[("hybrid", "masked", n)], f1[("hybrid_random", None, n)])]
        vs = cells[("hybrid", n)]["vs_hybrid_random"]
        assert vs["n_pairs"] == 3 and vs["mean_diff"] == pytest.approx(statistics.mean(d))
        assert vs["p_holm"] >= vs["p_value"]
    assert not any("vs_hybrid_random" in c for (t, _), c in cells.items() if t != "hybrid")


def test_a_fewshot_cell_keeps_its_n_when_a_class_is_short():
    """Trials reporting 65 labelled records in the N = 70 cell stay there and pair with the cells there; the cell
    reports what it trained on apart: one number when its seeds agree, else [min, max]."""
    from ssrl.kinds import kind_of
    from ssrl.report.tables import results_markdown

    used = {("scratch", 70, 42): 65, ("scratch", 70, 52): 65, ("scratch", 70, 62): 65, ("ssl", 70, 42): 65}
    rows = [{**r, "n_labelled_used": used.get((r["track"], r["n_labelled"], r["seed"]), r["n_labelled"])}
            for r in FEWSHOT_ROWS if r["bn_stats"] == "precise"]
    cells = kind_of("fewshot").cells(rows, "test_macro_f1", [])
    by = {(c["track"], c["n_labelled"]): c for c in cells}
    scratch, ssl = by[("scratch", 70)], by[("ssl", 70)]
    assert scratch["n_labelled_used"] == 65 and ssl["n_labelled_used"] == [65, 70]
    assert [r["n_labelled_used"] for r in scratch["per_seed"]] == [65, 65, 65]
    assert ssl["vs_scratch"]["n_pairs"] == 3  # matched by the key N, not by what each cell realised
    assert by[("scratch", 300)]["n_labelled_used"] == 300
    md = results_markdown({"sweep": "fewshot", "metric": "test_macro_f1", "cells": cells})
    assert "| 65 (N=70) " in md and "| 65-70 (N=70) " in md and "| 300 " in md


def test_a_row_written_before_n_labelled_used_counts_its_n_labelled():
    from ssrl.report.stats import n_labelled_used

    assert n_labelled_used({"fraction": 0.1, "n_labelled": 171}) == 171  # an older file: the realised count
    assert n_labelled_used({"n_labelled": 70, "n_labelled_used": 65}) == 65
    assert n_labelled_used({"fraction": 0.1, "n_labelled_used": None}) is None
    old = {k: v for k, v in _row("supervised", 0.1, 42, 0.8).items() if k != "n_labelled_used"}
    (cell,) = build_cells([{**old, "n_labelled": 170}], "test_macro_auroc")
    assert cell["n_labelled_used"] == 170 and "n_labelled" not in cell
