"""Plug-ins: an encoder and an SSL method from a module outside ssrl, named 'module:Class' in a sweep file."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from helpers import launch_smoke_scarcity

from ssrl.tune.spec import SweepError, load_sweep

REPO = Path(__file__).resolve().parents[1]
MODULE = "ssrl_plugin_example"  # unique: written to tmp_path, imported by name in every process
SOURCE = '''
import torch
from torch import nn

from ssrl.ssl import SSLMethod, nt_xent


class TinyEncoder(nn.Module):
    """One strided conv: (B, leads, T) -> (B, width); feature_map for masked pretraining."""

    def __init__(self, in_leads=12, width=8):
        super().__init__()
        self.conv = nn.Conv1d(in_leads, width, 7, stride=4, padding=3)
        self.in_leads, self.out_dim, self.feature_dim, self.feature_stride = in_leads, width, width, 4

    def feature_map(self, x):
        return torch.relu(self.conv(x))

    def forward(self, x):
        return self.feature_map(x).mean(dim=-1)


class TinyMethod(SSLMethod):
    """SimCLR with a linear projector."""

    def __init__(self, encoder, cfg):
        super().__init__(encoder, cfg)
        self.projector = nn.Linear(encoder.out_dim, 16)

    def loss(self, x1, x2):
        return nt_xent(self.projector(self.encoder(x1)), self.projector(self.encoder(x2)), 0.5)


class NoOutDim(nn.Module):
    def __init__(self, in_leads=12, width=8):
        super().__init__()
        self.conv = nn.Conv1d(in_leads, width, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=-1)


class NoLoss(SSLMethod):
    pass


class Broken(nn.Module):
    def __init__(self, encoder, cfg):
        super().__init__()
        self.encoder = encoder


NotAModule = dict
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The plug-in module in tmp_path, importable here (sys.path) and in child processes (PYTHONPATH)."""
    from ssrl.models import ENCODERS
    from ssrl.ssl import METHODS

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / f"{MODULE}.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    before = dict(ENCODERS), dict(METHODS)
    yield folder
    sys.modules.pop(MODULE, None)
    for registry, items in zip((ENCODERS, METHODS), before):  # registered plug-ins do not leak into other tests
        registry.clear()
        registry.update(items)


def _pretrain_edits(encoder: str = f"{MODULE}:TinyEncoder", methods: list | None = None) -> dict:
    return {"scales.smoke.train.encoder": encoder, "scales.smoke.methods": methods or [f"{MODULE}:TinyMethod"]}


def test_plugin_names_resolve_through_the_registries(plugin):
    from ssrl.models import ENCODERS, build_encoder
    from ssrl.ssl import METHODS, build_method

    enc = build_encoder(f"{MODULE}:TinyEncoder", in_leads=12, width=4)
    assert type(enc).__module__ == MODULE and enc.out_dim == 4
    method = build_method(f"{MODULE}:TinyMethod", enc)
    assert method.encoder is enc and f"{MODULE}:TinyMethod" in METHODS and f"{MODULE}:TinyEncoder" in ENCODERS
    assert {"cnn6", "xresnet1d50", "xresnet1d101"} <= set(ENCODERS)  # built-in names unchanged


def test_a_sweep_file_names_a_plugin_encoder_and_method(plugin, edited_sweeps):
    sweeps = edited_sweeps(pretrain=_pretrain_edits(methods=[f"{MODULE}:TinyMethod", "masked"]),
                           scarcity={"scales.smoke.train.encoder": f"{MODULE}:TinyEncoder",
                                     "scales.smoke.pretrain_methods": [f"{MODULE}:TinyMethod", "simclr"]})
    assert load_sweep("pretrain", "smoke", sweeps).methods == (f"{MODULE}:TinyMethod", "masked")
    spec = load_sweep("scarcity", "smoke", sweeps)
    assert spec.pretrain_methods == (f"{MODULE}:TinyMethod", "simclr")
    assert {c.label for c in spec.cells} >= {f"ssl_frozen[{MODULE}:TinyMethod]", "ssl_frozen[simclr]"}


@pytest.mark.parametrize(("edits", "line"), [
    (_pretrain_edits(encoder="resnet9000", methods=["simclr"]),
     "encoder 'resnet9000' is unknown; use one of cnn6, xresnet1d101, xresnet1d50 or a plug-in "
     "'package.module:Class'"),
    (_pretrain_edits(encoder="no_such_pkg.models:Enc", methods=["simclr"]),
     "encoder 'no_such_pkg.models:Enc': module 'no_such_pkg.models' is not importable (No module named "
     "'no_such_pkg'); install its package or add its folder to PYTHONPATH (on every Ray node too)"),
    (_pretrain_edits(encoder=f"{MODULE}:Missing", methods=["simclr"]),
     f"encoder '{MODULE}:Missing': module '{MODULE}' has no class 'Missing'; fix the name after ':' (its "
     "torch.nn.Module classes: Broken, NoLoss, NoOutDim, TinyEncoder, TinyMethod)"),
    (_pretrain_edits(encoder=f"{MODULE}:NotAModule", methods=["simclr"]),
     f"encoder '{MODULE}:NotAModule' is not a class deriving from torch.nn.Module; point it at one"),
    (_pretrain_edits(encoder=f"{MODULE}:NoOutDim", methods=["simclr"]),
     f"encoder '{MODULE}:NoOutDim': NoOutDim lacks out_dim; set self.out_dim in __init__ to the size of the "
     "(B, out_dim) embedding that forward returns"),
    (_pretrain_edits(encoder="cnn6", methods=[f"{MODULE}:NoLoss"]),
     f"method '{MODULE}:NoLoss': class NoLoss lacks loss; subclass ssrl.ssl.SSLMethod (it gives inputs and "
     "on_step_end) and define loss(*inputs) -> Tensor"),
    (_pretrain_edits(encoder="cnn6", methods=[f"{MODULE}:Broken"]),
     f"method '{MODULE}:Broken': class Broken lacks inputs, loss, on_step_end; subclass ssrl.ssl.SSLMethod"),
    ({"scales.smoke.train.augment": "mixup"}, "unknown augmentation preset 'mixup'; known presets: none, simclr"),
])
def test_a_name_that_does_not_resolve_is_one_line_naming_it(plugin, edited_sweeps, edits, line):
    sweeps = edited_sweeps(pretrain=edits)
    with pytest.raises(SweepError) as err:
        load_sweep("pretrain", "smoke", sweeps)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{sweeps / 'pretrain.yaml'} (scale smoke): {line}"), msg


def test_finetuning_names_are_resolved_too(plugin, edited_sweeps):
    sweeps = edited_sweeps(scarcity={"scales.smoke.train.encoder": "resnet9000"})
    with pytest.raises(SweepError, match="encoder 'resnet9000' is unknown"):
        load_sweep("scarcity", "smoke", sweeps)
    sweeps = edited_sweeps(fewshot={"train.head": "transformer"})
    with pytest.raises(SweepError, match="head 'transformer' is unknown; use one of linear, mlp"):
        load_sweep("fewshot", "smoke", sweeps)
    sweeps = edited_sweeps(scarcity={"scales.smoke.pretrain_methods": ["simclr", "no_such_pkg:M"]})
    with pytest.raises(SweepError, match="method 'no_such_pkg:M': module 'no_such_pkg' is not importable"):
        load_sweep("scarcity", "smoke", sweeps)


def test_masked_pretraining_needs_the_encoders_feature_map(plugin, edited_sweeps):
    sweeps = edited_sweeps(pretrain=_pretrain_edits(encoder=f"{MODULE}:NoOutDim", methods=["masked"]))
    with pytest.raises(SweepError, match="lacks out_dim"):
        load_sweep("pretrain", "smoke", sweeps)
    (plugin / "ssrl_plugin_flat.py").write_text(
        "from torch import nn\nclass Flat(nn.Module):\n    def __init__(self, in_leads=12, width=8):\n"
        "        super().__init__()\n        self.lin, self.out_dim = nn.Linear(in_leads, width), width\n"
        "    def forward(self, x):\n        return self.lin(x.mean(-1))\n")
    sweeps = edited_sweeps(pretrain=_pretrain_edits(encoder="ssrl_plugin_flat:Flat", methods=["simclr", "masked"]))
    with pytest.raises(SweepError, match="method 'masked' on encoder 'ssrl_plugin_flat:Flat': building it failed "
                                         r"\(ValueError: masked pretraining needs an encoder with feature_map"):
        load_sweep("pretrain", "smoke", sweeps)
    sys.modules.pop("ssrl_plugin_flat", None)


def test_unknown_encoder_exits_2_before_ray_starts(plugin, launch, edited_sweeps, synth_root, tmp_path, monkeypatch,
                                                   capsys):
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("ray.init was called: the unknown encoder was not caught before Ray")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    sweeps = edited_sweeps(pretrain={"scales.smoke.train.encoder": "resnet9000"})
    argv = ["--sweep", "scarcity", "--scale", "smoke", "--data-root", str(synth_root), "--out",
            str(tmp_path / "runs"), "--sweeps-dir", str(sweeps)]
    assert launch.main(argv) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {sweeps / 'pretrain.yaml'} (scale smoke): encoder 'resnet9000' is unknown; use one of "
                   "cnn6, xresnet1d101, xresnet1d50 or a plug-in 'package.module:Class'\n")
    assert not (tmp_path / "runs").exists()
    sweeps = edited_sweeps(pretrain={"scales.smoke.train.encoder": "cnn6"},
                           scarcity={"scales.smoke.pretrain_methods": [f"{MODULE}:NoLoss"]})
    assert launch.main(argv) == 2
    assert "method 'ssrl_plugin_example:NoLoss': class NoLoss lacks loss" in capsys.readouterr().err


@pytest.mark.e2e
def test_smoke_sweep_runs_a_plugin_encoder_and_method_end_to_end(plugin, edited_sweeps, synth_root, cache_dir,
                                                                 tmp_path):
    """`python launch.py` as a user runs it, with the plug-in on PYTHONPATH: Ray's workers import it by name."""
    name_enc, name_method = f"{MODULE}:TinyEncoder", f"{MODULE}:TinyMethod"
    sweeps = edited_sweeps(
        pretrain={"scales.smoke.train.encoder": name_enc, "scales.smoke.methods": [name_method],
                  "scales.smoke.train.epochs": 1},
        scarcity={"scales.smoke.train.encoder": name_enc, "scales.smoke.pretrain_methods": [name_method],
                  "track_train": {"ssl_frozen": {"lr": 0.01}}, "scales.smoke.tracks": ["supervised", "ssl_frozen"], "scales.smoke.fractions": [1.0],
                  "scales.smoke.seeds": [42], "scales.smoke.train.epochs": 1})
    out = tmp_path / "runs"
    proc = launch_smoke_scarcity(sweeps, synth_root, cache_dir, out)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    res = json.loads((out / "scarcity" / "results.json").read_text())
    assert res["n_failed"] == 0 and res["pretraining"]["methods"] == [name_method]
    assert {(c["track"], c.get("method")) for c in res["cells"]} == {("supervised", None), ("ssl_frozen", name_method)}
    # the encoder that was pretrained and handed on is the plug-in's: its name and its weights
    from ssrl.train.checkpoint import read_checkpoint

    (best,) = (out / "ray" / "pretrained").glob("*/encoder_best.pt")
    blob = read_checkpoint(best)
    assert blob["encoder"] == name_enc and set(blob["state_dict"]) == {"conv.weight", "conv.bias"}
    assert blob["state_dict"]["conv.weight"].shape == (8, 12, 7)  # width 8 from the smoke scale


def test_a_plugins_reuse_key_follows_its_code_and_is_a_folder_name(tmp_path, monkeypatch):
    """Editing a plug-in's module changes its pretraining key (no stale reuse); built-in keys stay as they were."""
    import importlib
    import sys

    from ssrl.config import PretrainConfig
    from ssrl.tune.stages import pretrain_key

    pkg = tmp_path / "keyplug"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "enc.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = PretrainConfig(data_root="/d", method="simclr", encoder="cnn6")
    builtin = pretrain_key(cfg, "f" * 64)
    assert builtin.startswith("simclr-cnn6-")
    plug = PretrainConfig.__new__(PretrainConfig)  # the key reads fields only: no need to build the encoder
    plug.__dict__.update(cfg.__dict__, encoder="keyplug.enc:Enc")
    first = pretrain_key(plug, "f" * 64)
    assert first.startswith("simclr-keyplug.enc_Enc-") and ":" not in first
    (pkg / "enc.py").write_text("X = 2\n")
    sys.modules.pop("keyplug.enc", None)
    importlib.invalidate_caches()
    assert pretrain_key(plug, "f" * 64) != first
    assert pretrain_key(cfg, "f" * 64) == builtin
