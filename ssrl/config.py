"""Typed, frozen run configs: Tune's flat dict is converted once, unknown keys are errors."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

C = TypeVar("C")
PRECISIONS = ("auto", "fp32", "bf16")  # ssrl.train.precision resolves "auto" on the device
COMPILES = ("auto", "on", "off")  # ssrl.train.step resolves "auto" on the device
# BatchNorm statistics a training encoder is evaluated with: recomputed on the labelled training subset
# before every validation ("precise"), or the running averages training left ("running", the reference's).
BN_STATS = ("precise", "running")
SELECTIONS = ("last",)  # label-free choices of the pretrained encoder handed to fine-tuning


class ConfigError(ValueError):
    """A setting that is unknown or out of range; the message names it."""


@dataclass(frozen=True)
class Track:
    """How a fine-tuning track initialises, freezes, augments and fits."""

    init: str  # "random" | "ssl" | "handcrafted" (no encoder: heart-rate/RR features only)
    frozen: bool
    augment: str  # preset name in ssrl.augment
    # "sgd": the training loop; "logreg": logistic regression on fixed features (ssrl.train.handcrafted);
    # "rule": a fixed clinical rule, no labels at all
    fit: str = "sgd"


# Scarcity tracks and few-shot conditions share one loop; they differ only here.
TRACKS: dict[str, Track] = {
    "supervised": Track("random", False, "none"),
    "ssl_finetune": Track("ssl", False, "none"),
    "ssl_frozen": Track("ssl", True, "none"),
    "random_frozen": Track("random", True, "none"),
    "scratch": Track("random", False, "none"),
    "scratch_aug": Track("random", False, "strong"),
    "ssl": Track("ssl", False, "none"),
    "ssl_aug": Track("ssl", False, "strong"),
    # rhythm controls: heart rate and RR regularity from R peaks (ssrl.data.rpeaks)
    "hrv_logreg": Track("handcrafted", True, "none", "logreg"),  # the features, logistic regression
    "hr_rule": Track("handcrafted", True, "none", "rule"),  # textbook rate and regularity bounds, zero labels
    # the features joined to a frozen encoder's embedding, logistic regression: does the encoder add anything?
    "hybrid": Track("ssl", True, "none", "logreg"),  # the pretrained encoder
    "hybrid_random": Track("random", True, "none", "logreg"),  # its control: a random encoder of the same shape
}
LABEL_FREE = frozenset(t for t, spec in TRACKS.items() if spec.fit == "rule")  # tracks that see no label


@dataclass(frozen=True)
class DataSettings:
    """Where the data is and how it is read; shared by both run kinds."""

    data_root: str = ""
    sampling_rate: int = 100
    cache_dir: str = ""  # "" = $SSRL_CACHE_DIR or ~/.cache/ssrl
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    precision: str = "auto"  # "auto" (bf16 where native: CUDA, AVX512-BF16/AMX CPUs) | "fp32" | "bf16"
    compile: str = "auto"  # torch.compile the training step: "auto" (on CUDA only) | "on" | "off"
    encoder: str = "cnn6"
    encoder_width: int = 0  # 0 = the encoder's default width
    seed: int = 42


@dataclass(frozen=True)
class PretrainConfig(DataSettings):
    """One self-supervised pretraining run on the unlabelled pool (folds 1-8)."""

    method: str = "simclr"
    augment: str = "simclr"
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-6
    temperature: float = 0.1
    proj_dim: int = 128
    max_pool: int = 0  # 0 = the whole pool; >0 subsamples it (smoke scales)
    selection: str = "last"  # which epoch's encoder is handed on, chosen without labels: "last"
    probe_every: int = 5  # epochs between online linear probes; 0 = never
    probe_task: str = "superdiagnostic"
    probe_size: int = 1000  # labelled train records the probe fits on
    # method "masked" only: hide time segments (all leads) and whole leads, reconstruct them
    mask_ratio: float = 0.5  # share of each record's time segments hidden
    mask_seconds: float = 0.2  # length of one segment in seconds (20 samples at 100 Hz, 100 at 500 Hz)
    mask_leads: float = 0.0  # probability that a whole lead is hidden too
    decoder_width: int = 0  # decoder channels; 0 = a quarter of the encoder's feature channels (not saved with it)

    def __post_init__(self) -> None:
        _check_common(self)
        if self.selection not in SELECTIONS:
            raise ConfigError(f"selection {self.selection!r} is unknown; use one of {', '.join(SELECTIONS)} "
                              "(pretraining chooses its encoder without labels)")
        require_positive(self, "epochs", "batch_size", "lr", "temperature", "proj_dim", "mask_seconds")
        require_nonnegative(self, "max_pool", "probe_every", "probe_size", "weight_decay", "decoder_width")
        if not (0.0 < self.mask_ratio < 1.0 and 0.0 <= self.mask_leads < 1.0):
            raise ConfigError(f"mask_ratio {self.mask_ratio} / mask_leads {self.mask_leads} out of range; "
                              "use 0 < mask_ratio < 1 and 0 <= mask_leads < 1")


@dataclass(frozen=True)
class FinetuneConfig(DataSettings):
    """One downstream run: a track at a label fraction (or N per class) and a seed."""

    task: str = "superdiagnostic"
    track: str = "supervised"
    fraction: float = 1.0
    n_per_class: int = 0  # >0 selects a balanced N-per-class subset instead of a fraction
    head: str = "linear"
    pretrained: str = ""  # encoder checkpoint file, needed by tracks that start from SSL
    augment: str = ""  # "" = the track's preset
    epochs: int = 50
    patience: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    collapse_epoch: int = 1  # a run whose best epoch is <= this collapsed (tracks whose encoder trains)
    eval_batch_size: int = 1024
    bn_stats: str = "precise"  # "precise" | "running"; a frozen encoder keeps its checkpoint's statistics

    def __post_init__(self) -> None:
        _check_common(self)
        if self.track not in TRACKS:
            raise ConfigError(f"track {self.track!r} is unknown; use one of {', '.join(TRACKS)}")
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"fraction {self.fraction} is out of range; use 0 < fraction <= 1")
        require_positive(self, "epochs", "patience", "batch_size", "lr", "eval_batch_size")
        require_nonnegative(self, "n_per_class", "weight_decay", "collapse_epoch")
        if self.bn_stats not in BN_STATS:
            raise ConfigError(f"bn_stats {self.bn_stats!r} is unknown; use one of {', '.join(BN_STATS)}")
        if TRACKS[self.track].init == "ssl" and not self.pretrained:
            raise ConfigError(f"track {self.track!r} needs 'pretrained', an encoder checkpoint file")

    @property
    def bn_stats_applied(self) -> str | None:
        """The BatchNorm statistics its results are evaluated with; None where no encoder trains (a frozen
        encoder keeps its checkpoint's statistics; a control has no encoder or a frozen one)."""
        return None if TRACKS[self.track].frozen else self.bn_stats

    @property
    def spec(self) -> Track:
        """The track's init/freeze/augment recipe, with the augment override applied."""
        t = TRACKS[self.track]
        return dataclasses.replace(t, augment=self.augment or t.augment)


# How an encoder pretrained elsewhere wants its input scaled (ssrl.models.adapter): each record's lead to zero
# mean and unit std, each record over all its leads, millivolts as recorded, or this project's standardisation
NORMALISE = ("per_lead", "global", "none", "dataset")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
_ENTRY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class PretrainedEntry:
    """An encoder pretrained elsewhere, as a sweep file's `pretrained:` list names it: what to build, its
    weights, and its input contract (the rate, length, leads and scaling it was trained on)."""

    name: str  # the SSL tracks run as ssl_finetune[name], ...
    weights: str  # a .safetensors file, or a .pt/.pth holding a state_dict (or an ssrl encoder checkpoint)
    sampling_rate: int  # Hz
    normalise: str  # one of NORMALISE
    encoder: str = ""  # a built-in or plug-in 'pkg.mod:Class'; "" = the one an ssrl checkpoint names
    kwargs: dict[str, Any] = field(default_factory=dict)  # built as Class(in_leads=len(leads), **kwargs)
    key_prefix: str = ""  # only the keys that start with it are the encoder's, with it stripped
    seconds: float = 0.0  # window length; 0 = the whole record
    leads: tuple[str, ...] = ()  # its lead order (a subset allowed); () = PTB-XL's 12 in their order
    sha256: str = ""  # the file's sha256: given, a file that differs is refused; the runner fills it in

    def __post_init__(self) -> None:
        if not _ENTRY_NAME.fullmatch(self.name):
            raise ConfigError(f"pretrained name {self.name!r}: use letters, digits, '_', '.', '-' (a letter first)")
        if not self.weights.endswith(WEIGHT_SUFFIXES):
            raise ConfigError(f"pretrained {self.name}: weights {self.weights!r} must end in "
                              f"{', '.join(WEIGHT_SUFFIXES)}")
        if self.normalise not in NORMALISE:
            raise ConfigError(f"pretrained {self.name}: normalise {self.normalise!r} is unknown; use one of "
                              f"{', '.join(NORMALISE)}")
        require_positive(self, "sampling_rate")
        require_nonnegative(self, "seconds")
        if not isinstance(self.kwargs, dict) or "in_leads" in self.kwargs:
            raise ConfigError(f"pretrained {self.name}: kwargs must be a mapping without in_leads (set by leads)")
        if len(set(self.leads)) != len(self.leads):
            raise ConfigError(f"pretrained {self.name}: leads {list(self.leads)} repeat a lead")

    @classmethod
    def from_raw(cls, raw: Any) -> PretrainedEntry:
        """An entry from a sweep file's mapping: unknown keys are errors, values typed as every setting's."""
        if not isinstance(raw, dict):
            raise ConfigError(f"pretrained entry {raw!r} must be a mapping {{name, encoder, weights, ...}}")
        where = f"pretrained {raw.get('name', '?')}"
        missing = [k for k in ("name", "weights", "sampling_rate", "normalise") if k not in raw]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}")
        leads = raw.get("leads") or ()
        if isinstance(leads, str) or not isinstance(leads, (list, tuple)):
            raise ConfigError(f"{where}: leads {leads!r} must be a list of lead names, e.g. [I, II, V1]")
        kwargs = raw.get("kwargs") or {}
        rest = {k: v for k, v in raw.items() if k not in ("leads", "kwargs")}
        entry = from_dict(cls, rest)
        return dataclasses.replace(entry, leads=tuple(str(x) for x in leads), kwargs=dict(kwargs))

    def contract(self) -> dict[str, Any]:
        """The input contract: what the adapter feeds the encoder."""
        return {"sampling_rate": self.sampling_rate, "seconds": self.seconds, "leads": list(self.leads),
                "normalise": self.normalise}


def from_dict(cls: type[C], values: dict[str, Any], ignore: tuple[str, ...] = ()) -> C:
    """Build a config from a flat dict; an unknown key is an error, not a new setting."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names - set(ignore))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} for {cls.__name__}; known: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(cls, k, v) for k, v in values.items() if k in names}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The flat dict of a config (what MLflow logs as params and checkpoints carry)."""
    return dataclasses.asdict(cfg)


# Text settings whose words YAML 1.1 reads as booleans (`compile: on` is True): false/true back to the words.
_BOOL_WORDS = {"compile": ("off", "on")}


def _coerce(cls: type, name: str, value: Any) -> Any:
    """A setting's value as its field's type: numbers from numbers or numeric text (YAML reads 5e-3 as text),
    never from true/false; a [low, high] range for a tuple field. One rule for every config and sweep section."""
    kind = _annotation(next(f.type for f in fields(cls) if f.name == name))
    if value is None or kind not in ("bool", "int", "float", "str", "tuple"):
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"setting {name}={value!r} must be true or false")
        return value
    if kind == "tuple":
        return _range(name, value)
    if kind == "str":
        if isinstance(value, bool) and name in _BOOL_WORDS:  # YAML 1.1 reads a bare on/off as true/false
            return _BOOL_WORDS[name][value]
        return str(value)
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if kind == "int":
            if number != int(number):
                raise ValueError
            return int(number)
        return number
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"setting {name}={value!r} must be {'a whole number' if kind == 'int' else 'a number'}") from None


def _annotation(t: Any) -> str:
    """'int' for a field annotated int (a string under postponed annotations), 'tuple' for tuple[float, float]."""
    text = t if isinstance(t, str) else getattr(t, "__name__", str(t))
    return text.split("|")[0].split("[")[0].strip()


def _range(name: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in value)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not 0 < lo <= hi:
        raise ConfigError(f"setting {name}={value!r} must be [low, high] with 0 < low <= high")
    return lo, hi


def _check_common(cfg: DataSettings) -> None:
    if cfg.sampling_rate not in (100, 500):
        raise ConfigError(f"sampling_rate {cfg.sampling_rate} is not available; use 100 or 500")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"precision {cfg.precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
    if cfg.compile not in COMPILES:
        raise ConfigError(f"compile {cfg.compile!r} is unknown; use one of {', '.join(COMPILES)}")


def require_positive(cfg: Any, *names: str) -> None:
    """ConfigError unless every named setting of cfg is > 0."""
    for n in names:
        if not getattr(cfg, n) > 0:
            raise ConfigError(f"setting {n}={getattr(cfg, n)!r} must be > 0")


def require_nonnegative(cfg: Any, *names: str) -> None:
    """ConfigError unless every named setting of cfg is >= 0."""
    for n in names:
        if getattr(cfg, n) < 0:
            raise ConfigError(f"setting {n}={getattr(cfg, n)!r} must be >= 0")
