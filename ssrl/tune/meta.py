"""A trial's config as Tune carries it: the training fields, the group it is sampled by, and its TrialMeta.

    {**training fields (FinetuneConfig or PretrainConfig), "group": str, "meta": TrialMeta as a dict}

Training fields configure ssrl.train and nothing else; ``group`` is the axis Tune's grid, the grouped
search and ASHA split trials by; ``meta`` says what the trial is (sweep, stage, cell, data, where its
encoder comes from) for tags, results rows and the trainable's plumbing. ``split`` is the one place a
config is taken apart, and a meta key that TrialMeta does not have is an error, not a silent new key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

GROUP = "group"  # Tune's grid axis and the search's group key
META = "meta"


@dataclass(frozen=True)
class TrialMeta:
    """What a trial is, beside how it trains.

    track, fraction and n_labelled place an evaluation trial in its results cell (the training fields
    `track` and `fraction` say how it trains: a few-shot trial trains on fraction 1.0 of its N subset);
    method is the SSL method a track starts from, or the one a pretraining trains.
    """

    sweep: str
    stage: str  # pretrain | search | eval
    group: str = ""  # the results group: 'ssl_finetune[simclr]@0.1'; a pretraining's method
    track: str = ""
    fraction: float | None = None
    n_labelled: int | None = None
    method: str = ""
    dataset: str = ""
    dataset_fingerprint: str = ""
    pretrained_uri: str = ""  # the encoder an SSL track fine-tunes ("" for every other track)
    weights_sha256: str = ""  # an encoder pretrained elsewhere: the sha256 of its weights file
    checkpoint_every: int = 1
    trial_key: str = ""  # the MLflow run a resumed trial reopens ("" = one per Tune trial)

    def as_dict(self) -> dict[str, Any]:
        """The meta as it travels in a Tune config (plain values only)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialMeta:
        """Typed meta from a config's 'meta'; an unknown key is a ValueError naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"trial meta has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)

    def replace(self, **changes: Any) -> TrialMeta:
        """A copy with some fields changed (an unknown field is a TypeError)."""
        return dataclasses.replace(self, **changes)


def trial_space(training: dict[str, Any], meta: TrialMeta, group: str) -> dict[str, Any]:
    """A trial config from its training fields, meta and group."""
    return {**training, GROUP: group, META: meta.as_dict()}


def split(config: dict[str, Any]) -> tuple[dict[str, Any], TrialMeta]:
    """(training fields, meta) of a trial config; a config without meta gets an empty one (stage '')."""
    meta = config.get(META)
    typed = TrialMeta.from_dict(meta) if isinstance(meta, dict) else TrialMeta(sweep="", stage="")
    return {k: v for k, v in config.items() if k not in (GROUP, META)}, typed
