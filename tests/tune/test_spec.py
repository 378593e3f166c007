"""Sweep files: protocol rules that the spec enforces when it reads them (no Ray needed)."""

from __future__ import annotations

import pytest

from ssrl.tune.spec import SweepError, load_sweep


def test_fewshot_refuses_augmentations_that_change_heart_rate(edited_sweeps):
    sweeps = edited_sweeps(fewshot={"track_train": {"scratch_aug": {"augment": "strong_resize"}}})
    with pytest.raises(SweepError, match="heart rate"):
        load_sweep("fewshot", "paper", sweeps)
    sweeps = edited_sweeps(scarcity={"track_train": {"supervised": {"augment": "strong_resize"}}})
    assert load_sweep("scarcity", "paper", sweeps).track_train["supervised"]["augment"] == "strong_resize"
