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


@pytest.mark.parametrize("scale", ["smoke", "demo", "cpu", "paper"])
def test_search_trains_with_the_evaluations_epochs(scale):
    """Same epoch budget, hence the same cosine schedule, as the evaluation it chooses for."""
    for name in ("fewshot", "scarcity"):
        spec = load_sweep(name, scale)
        assert spec.search.epochs == spec.train["epochs"]


def test_search_epochs_of_their_own_are_refused(edited_sweeps):
    with pytest.raises(SweepError, match="search.epochs"):
        load_sweep("fewshot", "paper", edited_sweeps(fewshot={"search.epochs": 8}))
    with pytest.raises(SweepError, match="epochs of their own"):
        load_sweep("fewshot", "paper", edited_sweeps(fewshot={"track_train": {"scratch": {"epochs": 7}}}))
