"""What every fine-tuning track and every control shares: the labelled subset and the predictions file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from torch import nn

from ssrl.atomic import atomic_open
from ssrl.config import FinetuneConfig, to_dict
from ssrl.data import ECGData, TaskLabels, balanced_subset, fraction_subset
from ssrl.models import build_encoder, encoder_kwargs
from ssrl.train.checkpoint import encoder_from, read_checkpoint


def select_subset(train: TaskLabels, cfg: FinetuneConfig) -> np.ndarray:
    """Positions of the labelled training subset: balanced N per class, or a stratified fraction."""
    if cfg.n_per_class:
        return balanced_subset(train.y, cfg.n_per_class, cfg.seed, classes=train.classes)
    if cfg.fraction >= 1.0:
        return np.arange(len(train.rows))
    return fraction_subset(train.y, cfg.fraction, cfg.seed)


def build_track_encoder(cfg: FinetuneConfig, data: ECGData | None = None) -> nn.Module:
    """The track's encoder: rebuilt from the pretrained checkpoint file, or freshly initialised.

    A checkpoint with an input contract (an encoder pretrained elsewhere, ssrl.train.external) comes wrapped
    in its input adapter, fed from ``data``'s records; a track that augments crops it at random places.
    """
    kwargs = encoder_kwargs(cfg.encoder_width)
    if cfg.spec.init != "ssl":
        return build_encoder(cfg.encoder, in_leads=12, **kwargs)
    blob = read_checkpoint(cfg.pretrained)
    if "input" not in blob:
        return encoder_from(blob, cfg.pretrained, expect=cfg.encoder, expect_kwargs=kwargs)
    from ssrl.train.external import adapt_to_data

    if data is None:
        raise ValueError(f"{cfg.pretrained}: an encoder with an input contract needs the data it is fed from")
    encoder = encoder_from(blob, cfg.pretrained, expect=cfg.encoder)  # its own kwargs, from the checkpoint
    return adapt_to_data(encoder, json.loads(blob["input"]), data, random_crop=cfg.spec.augment != "none",
                         seed=cfg.seed + 2)


def classes_used(prob: np.ndarray) -> int:
    """How many classes the predictions use: distinct top-1 classes over the rows of prob (n, C)."""
    return int(len(np.unique(prob.argmax(1)))) if len(prob) else 0


def save_predictions(out_dir: Path | None, cfg: FinetuneConfig, labels: TaskLabels, data: ECGData,
                     p_test: np.ndarray) -> None:
    """The test fold's probabilities beside the trial's checkpoint (predictions.npz): with its ecg_ids and
    labels they let anyone re-score the trial (ssrl.report.rescore gathers them per sweep)."""
    if out_dir is None:
        return
    test = labels.split("test")
    with atomic_open(out_dir / "predictions.npz", "wb") as f:
        np.savez_compressed(f, prob=p_test, y=test.y, classes=np.array(labels.classes),
                            ecg_id=np.asarray(data.meta.index)[test.rows], config=str(to_dict(cfg)))
