"""Encoder checkpoints: state_dict plus the config as JSON, loaded with weights_only=True."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssrl.models import build_encoder
from ssrl.train.loop import atomic_torch_save

FORMAT = "ssrl-encoder/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def save_encoder(path: Path, encoder: nn.Module, name: str, kwargs: dict, config: dict, in_leads: int | None = None,
                 input_contract: dict | None = None, **extra: Any) -> None:
    """Write an encoder's weights with everything needed to rebuild it, atomically.

    ``input_contract`` (an encoder pretrained elsewhere: ssrl.train.external) says how fine-tuning feeds it.
    """
    blob = {
        "format": FORMAT,
        "encoder": name,
        "encoder_kwargs": json.dumps(kwargs, sort_keys=True),
        "in_leads": int(in_leads if in_leads is not None else getattr(encoder, "in_leads", 12)),
        "config": json.dumps(config, sort_keys=True),
        "extra": json.dumps(extra, sort_keys=True),
        "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
    }
    if input_contract is not None:
        blob["input"] = json.dumps(input_contract, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(blob, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file safely (weights only); refuse pickles that would run code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; run the pretraining sweep first or fix the path")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: refused, not a weights-only ssrl checkpoint ({first[:120]})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an ssrl encoder checkpoint (format {FORMAT} expected)")
    return blob


def load_encoder(path: str | Path, expect: str | None = None, expect_kwargs: dict | None = None) -> nn.Module:
    """A fresh encoder built from a checkpoint file; a different encoder than expected is an error."""
    return encoder_from(read_checkpoint(path), path, expect, expect_kwargs)


def encoder_from(blob: dict[str, Any], path: str | Path, expect: str | None = None,
                 expect_kwargs: dict | None = None) -> nn.Module:
    """A fresh encoder built from a read checkpoint (``read_checkpoint(path)``); checked as ``load_encoder``."""
    kwargs = json.loads(blob["encoder_kwargs"])
    if expect is not None and (blob["encoder"] != expect or (expect_kwargs is not None and kwargs != expect_kwargs)):
        raise CheckpointError(
            f"{path}: holds encoder {blob['encoder']!r} {kwargs or ''}, but the run asks for {expect!r} "
            f"{expect_kwargs or ''}; pretrain that encoder or set encoder={blob['encoder']!r}"
        )
    encoder = build_encoder(blob["encoder"], in_leads=blob["in_leads"], **kwargs)
    try:
        encoder.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit encoder {blob['encoder']!r}: {str(e).splitlines()[0]}") from None
    return encoder


def checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The config a checkpoint was made with."""
    return json.loads(read_checkpoint(path)["config"])
