"""The training step: the compile setting, the compiled step against the eager one, AdamW's choice, FLOPs."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch
from torch import nn
from torch._dynamo.backends.registry import lookup_backend
from torch._dynamo.utils import counters

from ssrl.config import ConfigError, FinetuneConfig, PretrainConfig, from_dict
from ssrl.models import build_encoder, build_head
from ssrl.ssl import build_method
from ssrl.train import pretrain, step
from ssrl.train.finetuning import Classifier, classifier_loss
from ssrl.train.pretraining import method_loss

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
needs_compiler = pytest.mark.skipif(step.cpu_compiler() is None,
                                    reason="torch.compile on CPU builds C++ kernels; no C++ compiler found")


# --- the setting ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [PretrainConfig, FinetuneConfig])
def test_the_compile_setting_is_checked_when_the_config_is_made(cls):
    assert cls().compile == "auto"
    with pytest.raises(ConfigError, match=r"^compile 'yes' is unknown; use one of auto, on, off$"):
        cls(compile="yes")
    # a sweep file's bare `compile: on` / `off` reaches from_dict as YAML 1.1's true / false
    assert from_dict(cls, {"compile": True}).compile == "on"
    assert from_dict(cls, {"compile": False}).compile == "off"
    assert from_dict(cls, {"compile": "off"}).compile == "off"


def test_the_compile_setting_stays_out_of_the_pretraining_reuse_key():
    """Like the device, `compile` changes float rounding only: encoders pretrained under any setting (or before
    the setting existed) are reused; a learning setting still changes the key."""
    from ssrl.tune.stages import pretrain_key

    base = PretrainConfig(data_root="/d", method="simclr", encoder="cnn6")
    keys = {pretrain_key(dataclasses.replace(base, compile=c), "f" * 64) for c in ("auto", "on", "off")}
    assert len(keys) == 1
    assert pretrain_key(dataclasses.replace(base, lr=base.lr * 2), "f" * 64) not in keys


def test_auto_compiles_on_cuda_only_and_on_needs_a_compiler_on_cpu(monkeypatch):
    assert step.resolve_compile("auto", CPU) is False
    assert step.resolve_compile("auto", CUDA) is True
    assert step.resolve_compile("off", CUDA) is False
    assert step.resolve_compile("on", CUDA) is True
    with pytest.raises(ValueError, match="compile 'yes' is unknown"):
        step.resolve_compile("yes", CPU)
    monkeypatch.setattr(step, "cpu_compiler", lambda: None)
    with pytest.raises(RuntimeError, match="compile: on needs a C\\+\\+ compiler on CPU"):
        step.resolve_compile("on", CPU)
    assert step.resolve_compile("off", CPU) is False


def test_the_step_is_compiled_with_static_shapes_and_cuda_graphs_only_on_cuda(monkeypatch):
    asked, marks = [], []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: asked.append(kw) or fn)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))

    def loss_of(x):
        return x.sum()

    assert step.compile_step(loss_of, CUDA, False) is loss_of and not asked  # off: the function itself
    step.compile_step(loss_of, CPU, True)
    graphed = step.compile_step(loss_of, CUDA, True)
    assert asked == [{"dynamic": False}, {"dynamic": False, "mode": "reduce-overhead"}]
    assert graphed(torch.ones(3)).item() == 3 and marks == [1]  # each CUDA-graphed step begins a new iteration


def test_adamw_is_fused_on_cuda_and_torchs_default_on_cpu(monkeypatch):
    cpu = step.adamw([nn.Parameter(torch.zeros(3))], 1e-3, 1e-4)
    assert cpu.defaults["fused"] is None and cpu.defaults["foreach"] is None  # bitwise what runs trained with
    assert cpu.defaults["lr"] == 1e-3 and cpu.defaults["weight_decay"] == 1e-4
    asked = []
    monkeypatch.setattr(torch.optim, "AdamW", lambda params, **kw: asked.append(kw))
    step.adamw([types.SimpleNamespace(is_cuda=True)], 1e-3, 0.0)
    assert asked[0]["fused"] is True


# --- compiled against eager -----------------------------------------------------------------------------


def _classifier(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    enc = build_encoder("cnn6", in_leads=12, width=4)
    return Classifier(enc, build_head("linear", enc.out_dim, 5), frozen=False).train()


@needs_compiler
def test_the_compiled_step_gives_the_eager_losses():
    """cnn6 + head + BCE, 3 AdamW steps from one seed on one batch: inductor's C++ kernels against eager.

    Measured here 1e-7 apart (relative); rtol 1e-4 leaves room for other CPUs' vector widths and summation
    orders, and still fails on any real error (a wrong kernel or a lost BatchNorm update is far above it).
    """
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 12, 250, generator=gen), (torch.rand(8, 5, generator=gen) < 0.3).float()
    runs = {}
    torch._dynamo.reset()
    counters.clear()
    for compiled in (False, True):
        net = _classifier(seed=1)
        loss_of = step.compile_step(classifier_loss(net, nn.BCEWithLogitsLoss(), CPU, "fp32"), CPU, compiled)
        opt = step.adamw([p for p in net.parameters() if p.requires_grad], 1e-3, 1e-4)
        losses = [step.train_step(opt, loss_of, x, y).item() for _ in range(3)]
        runs[compiled] = losses, [b.clone() for b in net.buffers() if b.is_floating_point()]
        assert (counters["stats"]["unique_graphs"] > 0) is compiled  # the compiled run really went through Dynamo
    (eager, eager_bn), (comp, comp_bn) = runs[False], runs[True]
    assert eager[-1] < eager[0]  # the steps really train
    torch.testing.assert_close(torch.tensor(comp), torch.tensor(eager), rtol=1e-4, atol=0)
    for a, b in zip(comp_bn, eager_bn):  # BatchNorm running statistics move alike under compile
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.fixture
def traced_compiles(monkeypatch):
    """torch.compile with a backend that records every graph Dynamo hands it (then runs it through aot_eager)."""
    torch._dynamo.reset()  # nothing compiled by an earlier test is reused
    graphs, real, aot_eager = [], torch.compile, lookup_backend("aot_eager")

    def backend(gm, example_inputs):
        batches = {t.shape[0] for t in example_inputs if isinstance(t, torch.Tensor) and t.shape[1:] == (12, 1000)}
        graphs.append(sorted(batches))  # the batch sizes of the (B, 12, T) views this graph takes
        return aot_eager(gm, example_inputs)

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(fn, backend=backend, dynamic=kw["dynamic"]))
    yield graphs
    torch._dynamo.reset()


def test_a_compiled_pretraining_compiles_each_batch_shape_once(pt_cfg, tmp_path, traced_compiles):
    """160 records in batches of 64: 64, 64, 32. The partial batch compiles once, in epoch 1, not every epoch;
    the losses are the eager run's."""
    cfg = pt_cfg(max_pool=160, batch_size=64, epochs=3, probe_every=0, compile="on")
    compiles_after_epoch, rows = [], {}
    for setting in ("on", "off"):
        rows[setting] = []

        def report(row, seen=rows[setting]):
            seen.append(row)
            compiles_after_epoch.append(len(traced_compiles))

        pretrain(dataclasses.replace(cfg, compile=setting), report, tmp_path / setting)
    on, off = rows["on"], rows["off"]
    assert [r["compiled"] for r in on] == [True] * 3 and [r["compiled"] for r in off] == [False] * 3
    # compiled in epoch 1 only (the eager run after it compiles nothing either)
    assert compiles_after_epoch[0] >= 2 and compiles_after_epoch == [compiles_after_epoch[0]] * 6
    assert [64] in traced_compiles and [32] in traced_compiles  # each shape its own static graph
    torch.testing.assert_close(torch.tensor([r["train_loss"] for r in on], dtype=torch.float64),
                               torch.tensor([r["train_loss"] for r in off], dtype=torch.float64), rtol=1e-4, atol=0)


# --- FLOPs ------------------------------------------------------------------------------------------------


def test_fine_tuning_step_flops_double_with_the_batch():
    net, bce = _classifier(seed=0), nn.BCEWithLogitsLoss()
    flops = {b: step.step_flops(classifier_loss(net, bce, CPU, "fp32"), torch.randn(b, 12, 250),
                                torch.zeros(b, 5)) for b in (4, 8)}
    assert flops[4] > 0 and flops[8] == 2 * flops[4]


def test_simclr_step_flops_double_with_the_batch_but_for_nt_xents_similarities():
    """Everything is per record except NT-Xent's (2N x 2N) similarity matrix z z^T, whose forward (1 product)
    and backward (2 products) cost 3 x 2 (2N)^2 D: doubling N adds 48 N^2 D beyond twice the FLOPs."""
    cfg = PretrainConfig(proj_dim=16)
    torch.manual_seed(0)
    method = build_method("simclr", build_encoder("cnn6", in_leads=12, width=4), cfg).train()
    loss_of = method_loss(method, CPU, "fp32")
    flops = {n: step.step_flops(loss_of, torch.randn(n, 12, 250), torch.randn(n, 12, 250)) for n in (4, 8)}
    assert flops[4] > 0 and flops[8] - 2 * flops[4] == 48 * 4**2 * cfg.proj_dim
