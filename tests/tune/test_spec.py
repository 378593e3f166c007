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


def test_a_condition_may_run_the_reference_bn_protocol(edited_sweeps):
    conditions = [{"track": "scratch", "n": 70}, {"track": "scratch", "n": 70, "bn_stats": "running"}]
    spec = load_sweep("fewshot", "paper", edited_sweeps(fewshot={"conditions": conditions}))
    assert [c.group for c in spec.cells] == ["scratch@N70", "scratch@N70:running"]
    assert [c.bn_stats for c in spec.cells] == ["", "running"]
    for bad, msg in [([*conditions, {"track": "scratch", "n": 70, "bn_stats": "precise"}], "repeat"),
                     ([{"track": "scratch", "n": 70, "bn_stats": "ema"}], "bn_stats"),
                     ([{"track": "ssl_frozen", "n": 70, "bn_stats": "running"}], "frozen encoder")]:
        with pytest.raises(SweepError, match=msg):
            load_sweep("fewshot", "paper", edited_sweeps(fewshot={"conditions": bad}))


def test_the_hand_crafted_control_is_not_searched(edited_sweeps):
    conditions = [{"track": "scratch", "n": 70}, {"track": "hrv_logreg", "n": 70}]
    spec = load_sweep("fewshot", "paper", edited_sweeps(fewshot={"conditions": conditions}))
    assert [c.group for c in spec.searched_cells] == ["scratch@N70"] and len(spec.cells) == 2


@pytest.mark.parametrize("scale", ["smoke", "demo", "cpu", "paper"])
def test_paper_scale_pretrains_one_encoder_per_evaluation_seed(scale):
    """At paper scale the pretrain sweep pretrains every evaluation seed (the runner then pairs them)."""
    pre = load_sweep("pretrain", scale)
    for name in ("fewshot", "scarcity"):
        assert (set(load_sweep(name, scale).seeds) <= set(pre.seeds)) == (scale == "paper")


def test_results_say_which_encoder_each_seed_fine_tuned():
    from types import SimpleNamespace

    from ssrl.tune.runner import _pretraining

    spec, pre = SimpleNamespace(seeds=(42, 52), pretrain_method="simclr"), SimpleNamespace(train={})
    done = [{"method": "simclr", "seed": 42, "uri": "u42"}, {"method": "simclr", "seed": 52, "uri": "u52"},
            {"method": "simclr", "seed": 62, "uri": "u62"}]
    assert _pretraining(done, spec, pre) == (
        {42: "u42", 52: "u52"}, {"method": "simclr", "selection": "last", "per_seed": True, "seeds": [42, 52]})
    shared = [{"method": "simclr", "seed": 42, "uri": "u42"}, {"method": "simclr", "seed": 52, "error": "boom"}]
    assert _pretraining(shared, spec, pre) == (
        None, {"method": "simclr", "selection": "last", "per_seed": False, "seeds": [42]})
