"""Our results beside the reference implementation's claims (docs/PROTOCOL.md section 14), as markdown tables."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ssrl.report.stats import n_labelled_used
from ssrl.report.tables import NA, cell_label, fmt, fmt_ci, fmt_p

# Reference claims (small CNN, 100 Hz, PTB-XL 1.0.1), docs/PROTOCOL.md section 14.
REF_SCARCITY = {("ssl_finetune", 0.10): "0.8717 (SimCLR, 1 seed)", ("supervised", 0.10): "0.8606 (1 seed); 0.8699 ± 0.0034 (10 seeds)"}
REF_FEWSHOT = {
    ("scratch", 70): ("0.115 ± 0.072", "66.7 %"),
    ("scratch_aug", 70): ("0.108 ± 0.042", "66.7 %"),
    ("ssl", 70): ("0.192 ± 0.003", "0 %"),
    ("scratch", 300): ("0.297 ± 0.018", "—"),
}


def _pm(cell: dict) -> str:
    std = cell.get("std")
    return f"{fmt(cell.get('mean'))} ± {fmt(std)}" if std is not None else fmt(cell.get("mean"))


def scarcity_table(res: dict[str, Any]) -> str:
    """Macro AUROC per track and fraction, paired Δ to supervised, and the reference's claim."""
    lines = ["| fraction | track | n labelled | test macro AUROC (mean ± std) | Δ vs supervised [95 % CI], p | seeds | reference |",
             "|---|---|---|---|---|---|---|"]
    for cell in sorted(res["cells"], key=lambda c: (c["fraction"], c["track"] != "supervised")):
        vs = cell.get("vs_supervised")
        delta = "—" if vs is None or vs.get("mean_diff") is None else (
            f"{vs['mean_diff']:+.4f} {fmt_ci(vs.get('ci95'))}, {fmt_p(vs.get('p_value'))}")
        ref = REF_SCARCITY.get((cell["track"], round(cell["fraction"], 4)), "") if cell.get("method") in (
            None, "simclr") else ""  # the reference's SSL claims are SimCLR's
        lines.append(f"| {cell['fraction']:.0%} | {cell_label(cell)} | {n_labelled_used(cell)} | {_pm(cell)} | {delta} | "
                     f"{len(cell['seeds'])} | {ref} |")
    return "\n".join(lines)


def _ref_fewshot(cell: dict, cells: list[dict]) -> tuple[str, str]:
    """The reference's claim for a cell: beside its protocol (running BN statistics) when that cell exists."""
    key = (cell["track"], cell["n_labelled"])
    if cell.get("method") not in (None, "simclr"):  # the reference's SSL condition is SimCLR
        return "", ""
    has_running = any((c["track"], c["n_labelled"]) == key and c.get("bn_stats") == "running" for c in cells)
    if has_running and cell.get("bn_stats") != "running":
        return "", ""
    return REF_FEWSHOT.get(key, ("", ""))


def _delta(vs: dict | None) -> str:
    """'+0.0123 [lo, hi], p=0.045' for a paired comparison, '—' without one."""
    if vs is None or vs.get("mean_diff") is None:
        return "—"
    return f"{vs['mean_diff']:+.4f} {fmt_ci(vs.get('ci95'))}, {fmt_p(vs.get('p_value'))}"


def fewshot_table(res: dict[str, Any]) -> str:
    """Macro-F1, paired Δ and collapse per condition, the trivial baseline, and the reference's claims."""
    lines = ["| condition | BN stats | N | test macro-F1 (mean ± std) | Δ vs scratch [95 % CI], p | collapse rate "
             "(Fisher p vs scratch) | single class on test | best epoch (mean) | seeds | reference macro-F1 | "
             "reference collapse |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for cell in res["cells"]:
        ref_f1, ref_c = _ref_fewshot(cell, res["cells"])
        rate, single, p = cell.get("collapse_rate"), cell.get("single_class_rate"), cell.get("collapse_vs_scratch_p")
        collapse = NA if rate is None else f"{rate:.0%}" + (f" ({fmt_p(p)})" if "collapse_vs_scratch_p" in cell else "")
        lines.append(f"| {cell_label(cell)} | {cell.get('bn_stats', NA)} | {cell['n_labelled']} | {_pm(cell)} | "
                     f"{_delta(cell.get('vs_scratch'))} | {collapse} | {NA if single is None else f'{single:.0%}'} | "
                     f"{fmt(cell.get('best_epoch_mean'), 1)} | {len(cell['seeds'])} | {ref_f1} | {ref_c} |")
    tb = res.get("trivial_baseline") or {}
    if tb:
        lines.append(f"| always {tb['class']} (trivial) | — | — | {fmt(tb['value'])} | — | — | — | — | — | ≈ 0.18 | — |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print both tables from results.json files: python -m ssrl.report.reference SCARCITY FEWSHOT."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("scarcity", type=Path)
    p.add_argument("fewshot", type=Path, nargs="?")
    args = p.parse_args(argv)
    print(scarcity_table(json.loads(args.scarcity.read_text())))
    if args.fewshot:
        print()
        print(fewshot_table(json.loads(args.fewshot.read_text())))


if __name__ == "__main__":
    main()
