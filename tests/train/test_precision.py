"""Precision: bf16 autocast runs on CPU when asked, 'auto' follows the hardware, fp32 parts stay fp32."""

from __future__ import annotations

import pytest
import torch

from ssrl.config import ConfigError, FinetuneConfig
from ssrl.train import finetune, pretrain
from ssrl.train.precision import autocast, cpu_native_bf16, resolve_precision

CPU = torch.device("cpu")


def test_resolve_precision():
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"  # asked for explicitly: honoured, even where emulated
    assert resolve_precision("auto", CPU) == ("bf16" if cpu_native_bf16() else "fp32")
    with pytest.raises(ValueError, match="precision 'fp16' is unknown"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ValueError, match="resolved precision"):
        autocast(CPU, "auto")


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_autocast_runs_convolutions_at_the_precision_on_cpu(precision, dtype):
    conv = torch.nn.Conv1d(12, 8, 5)
    with autocast(CPU, precision):
        assert conv(torch.randn(2, 12, 100)).dtype == dtype


def test_config_rejects_unknown_precision(ft_cfg):
    with pytest.raises(ConfigError, match="precision 'fp16' is unknown"):
        ft_cfg(precision="fp16")


def test_pretraining_at_bf16_trains_in_bf16_and_probes_in_fp32(pt_cfg, tmp_path):
    runs = {}
    for precision in ("fp32", "bf16"):
        runs[precision] = []
        pretrain(pt_cfg(precision=precision, epochs=1), runs[precision].append, tmp_path / precision)
    fp32, bf16 = runs["fp32"][-1], runs["bf16"][-1]
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert bf16["probe_at_init"] == fp32["probe_at_init"]  # same init, fp32 probe: bitwise the same score
    assert bf16["train_loss"] != fp32["train_loss"]  # the steps really ran in bf16
    assert abs(bf16["train_loss"] - fp32["train_loss"]) < 0.2 * fp32["train_loss"]


def test_frozen_track_is_fp32_whatever_the_setting(ft_cfg, pretrained_ckpt):
    """Frozen embeddings and the linear head stay fp32: bf16 asked for changes nothing."""
    finals = {}
    for precision in ("fp32", "bf16"):
        seen: list[dict] = []
        finals[precision] = finetune(ft_cfg(track="ssl_frozen", pretrained=str(pretrained_ckpt), precision=precision),
                                     seen.append)
        assert {r["precision"] for r in seen} == {"fp32"}
    assert finals["bf16"] == finals["fp32"]


def test_finetuning_reports_the_precision_it_ran_at(ft_cfg):
    seen: list[dict] = []
    final = finetune(ft_cfg(precision="bf16", epochs=1), seen.append)
    assert final["precision"] == "bf16" and seen[0]["precision"] == "bf16"
    assert FinetuneConfig().precision == "auto"
