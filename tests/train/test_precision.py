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


# --- what `auto` decides on hardware this machine is not: the probes monkeypatched -------------------


@pytest.fixture
def cpu_probes(monkeypatch):
    """cpu_probes(avx512_bf16=..., amx=...): the CPU as torch's probes report it (None: the probe is absent)."""
    from ssrl.train import precision

    def set_probes(avx512_bf16: bool | None, amx: bool | None) -> None:
        for name, value in (("_is_avx512_bf16_supported", avx512_bf16), ("_is_amx_tile_supported", amx)):
            if value is None:
                monkeypatch.delattr(torch.cpu, name, raising=False)
            else:
                monkeypatch.setattr(torch.cpu, name, lambda v=value: v, raising=False)
        precision.cpu_native_bf16.cache_clear()  # asked once per process: ask again

    yield set_probes
    precision.cpu_native_bf16.cache_clear()  # the next test sees this machine's answer again


@pytest.mark.parametrize(("avx512_bf16", "amx", "want"), [
    (True, False, "bf16"), (False, True, "bf16"), (True, True, "bf16"), (False, False, "fp32")])
def test_auto_on_cpu_is_bf16_only_where_the_cpu_reports_native_bf16(cpu_probes, avx512_bf16, amx, want):
    cpu_probes(avx512_bf16, amx)
    assert cpu_native_bf16() is (want == "bf16")
    assert resolve_precision("auto", CPU) == want
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"  # asked: as asked


@pytest.mark.parametrize(("cpuinfo", "want"), [("flags : fpu avx2 avx512f avx512_bf16", True),
                                               ("flags : fpu avx2 amx_bf16 amx_tile", True),
                                               ("flags : fpu sse avx2 fma", False), (OSError, False)])
def test_without_torchs_probes_the_kernels_cpu_flags_decide(cpu_probes, monkeypatch, cpuinfo, want):
    """An older torch has neither probe: /proc/cpuinfo's flags decide; an unreadable file means no bf16."""
    from ssrl.train import precision

    class FakeCpuinfo:
        def __init__(self, path):
            assert str(path) == "/proc/cpuinfo"

        def read_text(self):
            if cpuinfo is OSError:
                raise OSError("no /proc here")
            return cpuinfo

    cpu_probes(None, None)
    monkeypatch.setattr(precision, "Path", FakeCpuinfo)
    assert cpu_native_bf16() is want
    assert resolve_precision("auto", CPU) == ("bf16" if want else "fp32")


@pytest.mark.parametrize(("cuda_bf16", "want"), [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda_follows_the_device_not_the_cpu(cpu_probes, monkeypatch, cuda_bf16, want):
    """On a CUDA device the GPU decides (an AVX2-only host CPU does not matter, a bf16 one does not help)."""
    cpu_probes(not cuda_bf16, False)  # the CPU says the opposite of the GPU
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    assert resolve_precision("auto", torch.device("cuda")) == want
    assert resolve_precision("auto", torch.device("cuda", 1)) == want


def test_auto_on_another_device_is_fp32_even_on_a_bf16_cpu(cpu_probes):
    cpu_probes(True, True)
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    assert resolve_precision("auto", torch.device("meta")) == "fp32"
