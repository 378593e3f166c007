"""Tables generated from results files: `python -m ssrl.report markdown`, the docs' generated blocks, and the
check that prose states no difference or collapse count that its results files do not hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssrl.kinds import kind_of
from ssrl.report.generate import check_docs, check_prose, load_results, main, markdown, regenerate
from ssrl.report.stats import STATS_VERSION, add_holm
from ssrl.report.tables import results_markdown

ROOT = Path(__file__).resolve().parents[2]


def _rows() -> list[dict]:
    f1 = {"scratch": [0.22, 0.25, 0.24], "ssl": [0.30, 0.26, 0.33], "hrv_logreg": [0.50, 0.52, 0.47]}
    rows = [{"track": t, "method": "simclr" if t == "ssl" else None, "n_labelled": 70, "seed": s, "test_macro_f1": v,
             "bn_stats": None if t == "hrv_logreg" else "precise", "collapsed": None if t == "hrv_logreg" else i == 0,
             "status": "ok"} for t, vals in f1.items() for i, (s, v) in enumerate(zip((42, 52, 62), vals))]
    return rows + [{"track": "hr_rule", "method": None, "n_labelled": 0, "seed": s, "test_macro_f1": 0.41,
                    "bn_stats": None, "collapsed": None, "status": "ok"} for s in (42, 52, 62)]


def _write(tmp_path: Path, name: str = "fs.json", holm: bool = True) -> Path:
    cells = kind_of("fewshot").cells(_rows(), "test_macro_f1", ["simclr"])
    res = {"sweep": "fewshot", "metric": "test_macro_f1", "baseline_track": "scratch", "cells": cells}
    if holm:
        res.update(multiplicity=add_holm(cells), stats_version=STATS_VERSION)
    else:  # a file from before Holm adjustment: no p_holm anywhere
        for c in cells:
            for d in [v for k, v in c.items() if k.startswith("vs_")] + list((c.get("between_methods") or {}).values()):
                d.pop("p_holm", None)
            for k in [k for k in c if k.endswith("_p_holm")]:
                del c[k]
    path = tmp_path / name
    path.write_text(json.dumps(res))
    return path


def test_markdown_prints_every_cell_with_raw_and_adjusted_p(tmp_path, capsys):
    path = _write(tmp_path)
    text = markdown(path)
    assert text == results_markdown(json.loads(path.read_text()))
    for label in ("| scratch ", "| ssl[simclr] ", "| hrv_logreg ", "| hr_rule "):
        assert label in text
    assert "Holm" in text and "Δ hrv_logreg" in text and "Δ hr_rule" in text and "| 1/3 " in text
    assert main(["markdown", str(path)]) == 0 and capsys.readouterr().out == text


def test_a_file_before_holm_is_recomputed_from_its_seeds(tmp_path):
    old = _write(tmp_path, "old.json", holm=False)
    res = load_results(old)
    assert res["recomputed"] and res["multiplicity"]["families"]["paired metric contrasts"] > 0
    assert "older version of the statistics" in markdown(old)
    assert main(["restat", str(old)]) == 0 and "recomputed" not in json.loads(old.read_text())
    rewritten = json.loads(old.read_text())
    assert rewritten["stats_version"] == STATS_VERSION and rewritten["cells"] == res["cells"]
    assert "older version" not in markdown(old) and main(["restat", str(old)]) == 0  # already current
    raw = json.loads(old.read_text())
    raw["cells"][0]["mean"] += 0.01  # an older file whose summary disagrees with its own seeds
    del raw["stats_version"]
    old.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="inconsistent"):
        load_results(old)


def test_generated_blocks_are_regenerated_and_stale_ones_found(tmp_path):
    path = _write(tmp_path)
    doc = tmp_path / "doc.md"
    doc.write_text(f"# t\n\n## Few-shot\n\nText.\n\n<!-- generated: {path.name} -->\nold table\n<!-- end generated -->\n")
    assert any("differs" in b for b in check_docs(doc, tmp_path))
    doc.write_text(regenerate(doc.read_text(), tmp_path))
    assert check_docs(doc, tmp_path) == [] and markdown(path) in doc.read_text()
    assert main(["docs", str(doc), "--root", str(tmp_path)]) == 0


def test_prose_numbers_must_come_from_the_section_files(tmp_path):
    res = load_results(_write(tmp_path))
    d = next(c for c in res["cells"] if c["track"] == "ssl")["vs_scratch"]["mean_diff"]
    assert check_prose(f"ssl beats scratch by {d:+.3f}; 1 of 3 seeds collapsed.", [res]) == []
    bad = check_prose("ssl beats scratch by +0.123; 2 of 3 seeds collapsed.", [res])
    assert len(bad) == 2 and "+0.123" in bad[0] and "2 of 3" in bad[1]
    assert check_prose("3 of 5 lead sets", [res]) == []  # a count that is not about collapse


@pytest.mark.parametrize("doc", ["README.md", "docs/RESULTS.md"])
def test_docs_tables_are_the_results_files(doc):
    """Every generated block equals `python -m ssrl.report markdown FILE`, and the prose of its section states
    no difference or collapse count that the section's results files do not hold."""
    text = (ROOT / doc).read_text()
    assert "<!-- generated: " in text
    assert check_docs(ROOT / doc, ROOT) == []


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT) for p in (ROOT / "docs" / "results").rglob("*.json")
                                        if "cells" in json.loads(p.read_text())), ids=str)
def test_published_files_hold_todays_statistics(path):
    """Every published results file carries Holm-adjusted families and cell intervals inside [0, 1] (its metric's
    bounds); `python -m ssrl.report restat` keeps them current."""
    res = json.loads((ROOT / path).read_text())
    assert res["stats_version"] == STATS_VERSION and res["multiplicity"]["method"] == "holm"
    for cell in res["cells"]:
        if cell.get("ci95"):
            assert 0.0 <= cell["ci95"][0] <= cell["mean"] <= cell["ci95"][1] <= 1.0, cell


def _as_before_n_labelled_used(cell: dict) -> dict:
    """A cell as a file from before n_labelled_used held it: the realised count as n_labelled, per seed too."""
    out = {k: v for k, v in cell.items() if k not in ("n_labelled", "n_labelled_used")}
    out["per_seed"] = [{**{k: v for k, v in r.items() if k != "n_labelled_used"}, "n_labelled": r["n_labelled_used"]}
                       for r in cell["per_seed"]]
    return {**out, "n_labelled": cell["n_labelled_used"]}


@pytest.mark.parametrize("name", ["scarcity-ptbxl-cpu.json", "fewshot-cpu-full-with-controls.json"])
def test_a_file_from_before_n_labelled_used_renders_the_same_table_and_restat_renames_the_count(
        tmp_path, capsys, name):
    """A published file as it was before n_labelled_used (the realised count as n_labelled) renders the same
    table, and restat moves the count to n_labelled_used (a few-shot cell keeps n_labelled, its key N) with every
    other value as it was: back to the published file."""
    published = json.loads((ROOT / "docs" / "results" / name).read_text())
    assert all("n_labelled_used" in c for c in published["cells"])
    old = {**published, "cells": [_as_before_n_labelled_used(c) for c in published["cells"]]}
    path = tmp_path / name
    path.write_text(json.dumps(old))
    before = markdown(path)
    assert "older version" not in before  # current statistics: nothing recomputed to render it
    assert main(["restat", str(path)]) == 0 and capsys.readouterr().out == f"{path}: rewritten\n"
    new = json.loads(path.read_text())
    assert new == published
    assert markdown(path) == before == markdown(ROOT / "docs" / "results" / name)  # the same table, now read from n_labelled_used
    assert main(["restat", str(path)]) == 0 and capsys.readouterr().out == f"{path}: already current\n"
