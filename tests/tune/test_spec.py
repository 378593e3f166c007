"""Sweep files: protocol rules that the spec enforces when it reads them (no Ray needed)."""

from __future__ import annotations

import dataclasses

import pytest

from ssrl.tune.spec import SCALES, SweepError, load_sweep


def test_fewshot_refuses_augmentations_that_change_heart_rate(edited_sweeps):
    sweeps = edited_sweeps(fewshot={"track_train": {"scratch_aug": {"augment": "strong_resize"}}})
    with pytest.raises(SweepError, match="heart rate"):
        load_sweep("fewshot", "paper", sweeps)
    sweeps = edited_sweeps(scarcity={"track_train": {"supervised": {"augment": "strong_resize"}}})
    assert load_sweep("scarcity", "paper", sweeps).track_train["supervised"]["augment"] == "strong_resize"


@pytest.mark.parametrize("scale", SCALES)
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


@pytest.mark.parametrize("scale", SCALES)
def test_paper_scale_pretrains_one_encoder_per_evaluation_seed(scale):
    """At the paper and cpu-full scales the pretrain sweep pretrains every evaluation seed (the runner then
    pairs them, so intervals include pretraining variance); smaller scales share one encoder."""
    pre = load_sweep("pretrain", scale)
    for name in ("fewshot", "scarcity"):
        assert (set(load_sweep(name, scale).seeds) <= set(pre.seeds)) == (scale in ("paper", "cpu-full"))


def test_results_say_which_encoder_each_seed_fine_tuned():
    from types import SimpleNamespace

    from ssrl.tune.runner import _pretraining

    spec, pre = SimpleNamespace(seeds=(42, 52), pretrain_methods=("simclr", "masked")), SimpleNamespace(train={})
    done = [{"method": m, "seed": s, "uri": f"{m}{s}"} for m in ("simclr", "masked") for s in (42, 52, 62)]
    assert _pretraining(done, spec, pre) == (
        {"simclr": {42: "simclr42", 52: "simclr52"}, "masked": {42: "masked42", 52: "masked52"}},
        {"methods": ["simclr", "masked"], "selection": "last", "per_seed": True, "seeds": [42, 52]})
    # one method short of a seed: every method shares its first encoder (one rule for the whole sweep)
    shared = [r for r in done if (r["method"], r["seed"]) != ("masked", 52)]
    assert _pretraining(shared, spec, pre) == (
        None, {"methods": ["simclr", "masked"], "selection": "last", "per_seed": False, "seeds": [42]})


def test_ssl_tracks_run_once_per_pretraining_method(edited_sweeps):
    """pretrain_methods: every SSL track (and few-shot SSL condition) once per method, other tracks once."""
    spec = load_sweep("scarcity", "paper", edited_sweeps(scarcity={"pretrain_methods": ["simclr", "masked", "byol"],
                                                                   "fractions": [0.1]}))
    assert [c.group for c in spec.cells] == [
        "supervised@0.1", "ssl_finetune[simclr]@0.1", "ssl_finetune[masked]@0.1", "ssl_finetune[byol]@0.1",
        "ssl_frozen[simclr]@0.1", "ssl_frozen[masked]@0.1", "ssl_frozen[byol]@0.1", "random_frozen@0.1"]
    fs = load_sweep("fewshot", "paper")
    assert fs.pretrain_methods == ("simclr", "masked")
    assert {c.group for c in fs.cells if c.track == "ssl"} == {
        "ssl[simclr]@N70", "ssl[masked]@N70", "ssl[simclr]@N70:running", "ssl[masked]@N70:running",
        "ssl[simclr]@N300", "ssl[masked]@N300"}
    assert {c.group for c in fs.cells if c.track == "hybrid"} == {
        "hybrid[simclr]@N70", "hybrid[masked]@N70", "hybrid[simclr]@N300", "hybrid[masked]@N300"}
    assert all(c.method == "" for c in fs.cells
               if c.track in ("scratch", "scratch_aug", "hrv_logreg", "hr_rule", "hybrid_random"))


@pytest.mark.parametrize(("value", "msg"), [
    ("simclr", "must be a list"), ([], "non-empty unless `pretrained:`"),
    (["simclr", "mae"], r"unknown method\(s\) \['mae'\]"), (["simclr", "simclr"], "repeats")])
def test_pretrain_methods_are_checked_when_the_file_is_read(edited_sweeps, value, msg):
    with pytest.raises(SweepError, match=msg):
        load_sweep("scarcity", "demo", edited_sweeps(scarcity={"pretrain_methods": value}))


def test_the_old_single_method_key_says_what_to_write(edited_sweeps):
    import yaml

    sweeps = edited_sweeps()
    raw = yaml.safe_load((sweeps / "fewshot.yaml").read_text())
    raw["scales"]["demo"]["pretrain_method"] = "byol"
    (sweeps / "fewshot.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(SweepError, match=r"pretrain_method is now pretrain_methods, a list: write "
                                         r"pretrain_methods: \[byol\]"):
        load_sweep("fewshot", "demo", sweeps)


def test_a_cell_says_which_pretraining_an_ssl_track_starts_from():
    from ssrl.config import ConfigError
    from ssrl.tune.spec import Cell

    assert Cell("ssl_finetune", 0.1, method="masked").label == "ssl_finetune[masked]"
    assert Cell("scratch", n_labelled=70, bn_stats="running").group == "scratch@N70:running"
    with pytest.raises(ConfigError, match="needs the pretraining method"):
        Cell("ssl_finetune", 0.1)
    with pytest.raises(ConfigError, match="only SSL tracks take a method"):
        Cell("supervised", 0.1, method="simclr")


@pytest.mark.parametrize("lr", ["5e-4", "5e-3"])
def test_fixed_lr_control_matches_the_fewshot_cpu_scale_but_for_the_search(lr):
    """bench/fewshot_fixed_lr is a control of sweeps/fewshot.yaml at cpu scale: if the sweep file's seeds,
    budget, methods or pretraining change, the control must follow, or its comparison means nothing."""
    from ssrl.tune.spec import SWEEPS_DIR

    control = load_sweep("fewshot", "cpu", SWEEPS_DIR.parent / "bench" / "fewshot_fixed_lr" / f"lr{lr}")
    main = load_sweep("fewshot", "cpu")
    assert not control.search.enabled and float(control.train["lr"]) == float(lr)
    assert (control.seeds, control.task, control.metric, control.pretrain_methods) == (
        main.seeds, main.task, main.metric, main.pretrain_methods)
    for key in ("encoder", "epochs", "patience", "batch_size", "weight_decay"):
        assert control.train[key] == main.train[key], key
    assert set(control.cells) <= set(main.cells)  # the control's conditions are the sweep's own cells
    assert load_sweep("pretrain", "cpu", control.path.parent) == dataclasses.replace(
        load_sweep("pretrain", "cpu"), path=control.path.parent / "pretrain.yaml")


def test_cpu_full_scale_differs_from_the_cpu_scale_only_in_what_it_says():
    """cpu-full measures what more pretraining and longer fine-tuning buy: pretraining differs from the cpu
    scale only in the pool, the epochs (and when the monitor probes); scarcity adds fractions and epochs; the
    few-shot sweep is the cpu scale's at one learning rate, its conditions the cpu scale's own cells."""
    big, cpu = load_sweep("pretrain", "cpu-full"), load_sweep("pretrain", "cpu")
    assert (big.train["max_pool"], big.train["epochs"]) == (0, 10) and cpu.train["max_pool"] > 0
    changed = {"max_pool", "epochs", "probe_every"}
    assert {k: v for k, v in big.train.items() if k not in changed} == {
        k: v for k, v in cpu.train.items() if k not in changed}
    assert (big.methods, big.resources) == (cpu.methods, cpu.resources) and len(cpu.seeds) == 1
    assert big.seeds == (42, 52, 62, 72, 82)  # one encoder per evaluation seed
    sc, sc_cpu = load_sweep("scarcity", "cpu-full"), load_sweep("scarcity", "cpu")
    assert {c.fraction for c in sc.cells} == {0.01, 0.05, 0.10, 0.25} and not sc.search.enabled
    assert {(c.track, c.method) for c in sc.cells} == {(c.track, c.method) for c in sc_cpu.cells}
    assert set(sc_cpu.cells) < set(sc.cells) and sc.seeds == sc_cpu.seeds
    assert (sc.train["epochs"], sc.train["patience"]) == (30, 10)
    fs, fs_cpu = load_sweep("fewshot", "cpu-full"), load_sweep("fewshot", "cpu")
    assert not fs.search.enabled and float(fs.train["lr"]) == 5e-3
    assert set(fs.cells) <= set(fs_cpu.cells) and {c.track for c in fs.cells} >= {"scratch", "ssl", "hrv_logreg"}
    assert (fs.seeds, fs.pretrain_methods) == (fs_cpu.seeds, fs_cpu.pretrain_methods)
    for key in ("encoder", "epochs", "patience", "batch_size", "weight_decay"):
        assert fs.train[key] == fs_cpu.train[key], key


def test_the_zero_label_rule_sits_at_n_0_and_only_there(edited_sweeps):
    spec = load_sweep("fewshot", "paper", edited_sweeps(fewshot={"conditions": [{"track": "hr_rule", "n": 0}]}))
    assert [c.group for c in spec.cells] == ["hr_rule@N0"] and spec.searched_cells == ()
    for bad, msg in [([{"track": "hr_rule", "n": 70}], "uses no labels"), ([{"track": "scratch", "n": 0}], "positive")]:
        with pytest.raises(SweepError, match=msg):
            load_sweep("fewshot", "paper", edited_sweeps(fewshot={"conditions": bad}))


def test_controls_sweep_matches_the_fewshot_cpu_full_scale():
    """bench/fewshot_controls runs the controls of sweeps/fewshot.yaml's cpu-full scale on their own, on the
    same seeds (hence subsets) and data: merged beside a cpu-full run, its cells pair by seed."""
    from ssrl.tune.spec import SWEEPS_DIR

    control = load_sweep("fewshot", "cpu-full", SWEEPS_DIR.parent / "bench" / "fewshot_controls")
    main = load_sweep("fewshot", "cpu-full")
    assert set(control.cells) == {c for c in main.cells if c.track in ("hrv_logreg", "hr_rule", "hybrid_random")}
    assert (control.seeds, control.task, control.metric, control.data_records) == (
        main.seeds, main.task, main.metric, main.data_records)
    assert not control.needs_pretraining and control.searched_cells == ()


@pytest.mark.parametrize("sub", ["simclr", "."])
def test_per_seed_scarcity_files_are_the_cpu_scale_for_one_method(sub):
    """bench/pretrain_variance's scarcity files run sweeps/scarcity.yaml's cpu scale for one method with one
    encoder per evaluation seed: the same cells, training, search and data, and the first three seeds the
    sweep's own, so their runs merge into one file and pair by seed (docs/RESULTS.md section 18)."""
    from ssrl.tune.spec import SWEEPS_DIR

    here = SWEEPS_DIR.parent / "bench" / "pretrain_variance" / sub
    spec, main = load_sweep("scarcity", "cpu", here), load_sweep("scarcity", "cpu")
    (method,) = spec.pretrain_methods
    assert set(spec.cells) == {c for c in main.cells if c.method in ("", method)}
    assert (spec.train, spec.track_train, spec.search, spec.resources, spec.data_records, spec.task) == (
        main.train, main.track_train, main.search, main.resources, main.data_records, main.task)
    assert spec.seeds[:len(main.seeds)] == main.seeds
    pre = load_sweep("pretrain", "cpu", here)
    assert pre.methods == (method,) and set(spec.seeds) <= set(pre.seeds)  # every seed has its own encoder
    base = load_sweep("pretrain", "cpu", SWEEPS_DIR.parent / "bench" / "pretrain_variance")
    assert pre.train == base.train  # both methods' encoders: 3 epochs on the same pool subsample


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_sweep_file_that_extends_another_holds_only_what_differs(tmp_path):
    """`extends:` lays a file over the one it names (relative to itself): mappings merge key by key, the scales
    included, lists and values replace; a file may extend one that extends another."""
    import os

    from ssrl.tune.spec import SWEEPS_DIR

    mine = tmp_path / "mine"
    _write(mine / "scarcity.yaml", f"extends: {os.path.relpath(SWEEPS_DIR / 'scarcity.yaml', mine)}\n"
           "pretrain_methods: [masked]\n"
           "scales:\n  cpu:\n    seeds: [7, 8]\n    fractions: [0.10]\n    train: {lr: 5.0e-3}\n")
    spec, main = load_sweep("scarcity", "cpu", mine), load_sweep("scarcity", "cpu")
    assert spec.seeds == (7, 8) and spec.pretrain_methods == ("masked",)
    assert spec.train == {**main.train, "lr": 5e-3}  # the other training settings are the scale's own
    assert set(spec.cells) == {c for c in main.cells if c.fraction == 0.10 and c.method in ("", "masked")}
    assert (spec.track_train, spec.search, spec.resources) == (main.track_train, main.search, main.resources)
    smoke, main_smoke = load_sweep("scarcity", "smoke", mine), load_sweep("scarcity", "smoke")
    assert smoke.pretrain_methods == ("masked",)  # a top-level change reaches every scale
    assert (smoke.seeds, smoke.train) == (main_smoke.seeds, main_smoke.train)  # a scale it leaves is the base's
    _write(tmp_path / "deeper" / "x" / "scarcity.yaml", "extends: ../../mine/scarcity.yaml\nscales:\n  cpu: {seeds: [9]}\n")
    deeper = load_sweep("scarcity", "cpu", tmp_path / "deeper" / "x")
    assert deeper.seeds == (9,) and deeper.cells == spec.cells and deeper.train == spec.train


@pytest.mark.parametrize("files, msg", [
    ({"a": "extends: ../b/scarcity.yaml\n", "b": "extends: ../a/scarcity.yaml\n"}, "makes a loop"),
    ({"a": "extends: scarcity.yaml\n"}, "makes a loop"),
    ({"a": "extends: ../nowhere/scarcity.yaml\n"}, "is not a file"),
    ({"a": "extends: [../b/scarcity.yaml]\n"}, "must be the path"),
    ({"a": "extends: ../b/scarcity.yaml\n", "b": "extends: ../a/scarcity.yaml\nseeds: [1]\n"}, "makes a loop"),
])
def test_a_bad_extends_is_one_line_naming_the_file(tmp_path, files, msg):
    for folder, text in files.items():
        _write(tmp_path / folder / "scarcity.yaml", text)
    with pytest.raises(SweepError, match=msg) as err:
        load_sweep("scarcity", "cpu", tmp_path / "a")
    assert str(tmp_path / "a" / "scarcity.yaml") in str(err.value) and "\n" not in str(err.value)


def test_an_extending_file_is_checked_like_any_other(tmp_path):
    from ssrl.tune.spec import SWEEPS_DIR

    _write(tmp_path / "scarcity.yaml", f"extends: {SWEEPS_DIR / 'scarcity.yaml'}\nscales:\n  cpu: {{seedz: [1]}}\n")
    with pytest.raises(SweepError, match="unknown key.*seedz"):
        load_sweep("scarcity", "cpu", tmp_path)


def test_every_bench_sweep_file_is_a_change_to_one_in_sweeps():
    """The benchmarks' controls and variants (bench/**.yaml) extend sweeps/ (directly, through one another, or
    as a link) instead of copying it, so a change to the protocol reaches them."""
    import yaml

    from ssrl.tune.spec import SWEEPS_DIR

    files = sorted((SWEEPS_DIR.parent / "bench").rglob("*.yaml"))
    assert len(files) >= 10
    for f in files:
        path, seen = f, []
        while path.resolve().parent != SWEEPS_DIR.resolve():
            raw = yaml.safe_load(path.read_text())
            assert "extends" in raw, f"{f} copies a sweep file instead of extending one in sweeps/"
            seen.append(path)
            path = path.parent / raw["extends"]
            assert len(seen) < 5, f"{f}: a chain of extends {seen}"
        assert path.resolve().name == f.name, f"{f} extends {path}, a sweep of another kind"


def test_the_per_seed_cpu_full_files_are_the_cpu_full_scale_for_masked():
    """bench/pretrain_variance/full: sweeps/ at cpu-full, masked only, one encoder for each of the first three
    seeds, with the encoders' config unchanged (so a 5-seed run of sweeps/ reuses them), every condition the
    cpu-full few-shot sweep runs, and the cpu-full scarcity sweep's cells at 1 % with its training."""
    from ssrl.tune.spec import SWEEPS_DIR

    here = SWEEPS_DIR.parent / "bench" / "pretrain_variance" / "full"
    pre, main_pre = load_sweep("pretrain", "cpu-full", here), load_sweep("pretrain", "cpu-full")
    assert pre.methods == ("masked",) and pre.train == main_pre.train and pre.resources == main_pre.resources
    spec, main = load_sweep("fewshot", "cpu-full", here), load_sweep("fewshot", "cpu-full")
    assert spec.seeds == main.seeds[:3] == pre.seeds and spec.pretrain_methods == ("masked",)
    assert set(spec.cells) == {c for c in main.cells if c.method in ("", "masked")}
    assert (spec.train, spec.search, spec.resources, spec.task) == (main.train, main.search, main.resources, main.task)
    sc, main_sc = load_sweep("scarcity", "cpu-full", here), load_sweep("scarcity", "cpu-full")
    assert sc.seeds == pre.seeds and sc.pretrain_methods == ("masked",)
    assert set(sc.cells) == {c for c in main_sc.cells if c.method in ("", "masked") and c.fraction == 0.01}
    assert (sc.train, sc.track_train, sc.search, sc.resources) == (
        main_sc.train, main_sc.track_train, main_sc.search, main_sc.resources)


def test_the_seeds_72_82_files_are_the_per_seed_cpu_full_files_for_the_last_two_seeds():
    """bench/pretrain_variance/full/seeds-72-82 runs ../'s three files for sweeps/'s last two cpu-full seeds and
    changes nothing else, so its results pool with ../'s (merge --add-seeds) into five seeds of one protocol."""
    from ssrl.tune.spec import SWEEPS_DIR

    full = SWEEPS_DIR.parent / "bench" / "pretrain_variance" / "full"
    main_seeds = load_sweep("pretrain", "cpu-full").seeds
    for kind in ("pretrain", "fewshot", "scarcity"):
        three, two = load_sweep(kind, "cpu-full", full), load_sweep(kind, "cpu-full", full / "seeds-72-82")
        assert two.seeds == (72, 82) and three.seeds + two.seeds == main_seeds
        assert dataclasses.replace(two, seeds=three.seeds, path=three.path) == three, kind


def test_the_five_percent_file_is_the_per_seed_scarcity_file_at_5_percent_for_five_seeds():
    """bench/pretrain_variance/full/five-percent: ../scarcity.yaml at 5 % instead of 1 %, sweeps/'s five cpu-full
    seeds on the encoders ../ and ../seeds-72-82 pretrain (same config, so reused), nothing else changed."""
    from ssrl.tune.spec import SWEEPS_DIR

    full = SWEEPS_DIR.parent / "bench" / "pretrain_variance" / "full"
    here = full / "five-percent"
    pre = load_sweep("pretrain", "cpu-full", here)
    assert pre.seeds == load_sweep("pretrain", "cpu-full").seeds
    assert dataclasses.replace(pre, seeds=(42, 52, 62), path=full / "pretrain.yaml") == load_sweep("pretrain", "cpu-full", full)
    one, five = load_sweep("scarcity", "cpu-full", full), load_sweep("scarcity", "cpu-full", here)
    assert five.seeds == pre.seeds and {c.fraction for c in five.cells} == {0.05}
    assert {dataclasses.replace(c, fraction=0.01) for c in five.cells} == set(one.cells)
    assert (five.train, five.track_train, five.search, five.resources, five.pretrain_methods) == (
        one.train, one.track_train, one.search, one.resources, one.pretrain_methods)
