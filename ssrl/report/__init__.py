"""Aggregation across seeds, statistics, tables and plots of sweep results (no Ray, no torch)."""

from ssrl.report.io import jsonable, write_bytes_atomic, write_json_atomic, write_text_atomic
from ssrl.report.stats import (
    add_fewshot_contrasts,
    add_method_contrasts,
    add_paired_vs,
    build_cells,
    constant_macro_f1,
    fisher_collapse_p,
    paired_difference,
    summarize,
)
from ssrl.report.tables import results_markdown, results_table_text

__all__ = [
    "add_fewshot_contrasts",
    "add_method_contrasts",
    "add_paired_vs",
    "build_cells",
    "constant_macro_f1",
    "fisher_collapse_p",
    "jsonable",
    "paired_difference",
    "plot_fewshot",
    "plot_scarcity",
    "results_markdown",
    "results_table_text",
    "summarize",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]


def __getattr__(name: str):
    """Import the plotting functions lazily (matplotlib is slow to import)."""
    if name in ("plot_scarcity", "plot_fewshot"):
        from ssrl.report import plots

        return getattr(plots, name)
    raise AttributeError(name)
