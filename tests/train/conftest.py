"""Tiny, fast training configs on the session's synthetic PTB-XL, in fp32 unless a test asks for bf16.

Under the configs' default precision `auto` a test's numbers would follow the CPU it runs on (bf16 on AVX512-BF16
and AMX CPUs, fp32 elsewhere), so a threshold measured on one machine could fail on the next (issue 29).
"""

from __future__ import annotations

import pytest

from ssrl.config import FinetuneConfig, PretrainConfig


@pytest.fixture
def ft_cfg(synth_root, cache_dir):
    """A factory of small fine-tuning configs (cnn6 at width 8, a few epochs, fp32)."""

    def make(**kw) -> FinetuneConfig:
        base = dict(data_root=str(synth_root), cache_dir=str(cache_dir), encoder="cnn6", encoder_width=8,
                    epochs=3, patience=10, batch_size=32, lr=3e-3, seed=42, device="cpu", precision="fp32")
        return FinetuneConfig(**{**base, **kw})

    return make


@pytest.fixture
def pt_cfg(synth_root, cache_dir):
    """A factory of small pretraining configs (fp32)."""

    def make(**kw) -> PretrainConfig:
        base = dict(data_root=str(synth_root), cache_dir=str(cache_dir), encoder="cnn6", encoder_width=8,
                    epochs=2, batch_size=64, lr=3e-3, seed=0, device="cpu", probe_every=1, probe_size=120,
                    max_pool=160, precision="fp32")
        return PretrainConfig(**{**base, **kw})

    return make


@pytest.fixture(scope="session")
def pretrained_ckpt(synth_root, cache_dir, tmp_path_factory):
    """One SimCLR encoder checkpoint shared by the fine-tuning tests (read-only for them), pretrained in fp32."""
    from ssrl.train import HANDED_ON, pretrain

    out = tmp_path_factory.mktemp("pretrained")
    cfg = PretrainConfig(data_root=str(synth_root), cache_dir=str(cache_dir), encoder="cnn6", encoder_width=8,
                         epochs=2, batch_size=64, seed=0, device="cpu", probe_every=1, probe_size=120, max_pool=160,
                         precision="fp32")
    pretrain(cfg, lambda m: None, out)
    return out / HANDED_ON
