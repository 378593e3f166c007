"""PTB-XL data layer: metadata and labels, the per-node signal cache, label-subset samplers."""

from ssrl.data.cache import ECGData, default_cache_dir, open_ptbxl, pin_cache_dir
from ssrl.data.ptbxl import (
    RHYTHM5,
    SPLITS,
    SUPERCLASSES,
    TASKS,
    DataError,
    PTBXLMeta,
    TaskLabels,
    describe,
    pretrain_rows,
    read_ptbxl,
    task_labels,
)
from ssrl.data.samplers import balanced_subset, fraction_subset, stratified_order

__all__ = [
    "RHYTHM5", "SPLITS", "SUPERCLASSES", "TASKS", "DataError", "ECGData", "PTBXLMeta", "TaskLabels",
    "balanced_subset", "default_cache_dir", "describe", "fraction_subset", "open_ptbxl", "pin_cache_dir", "pretrain_rows",
    "read_ptbxl", "stratified_order", "task_labels",
]
