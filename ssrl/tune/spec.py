"""Sweep files (sweeps/*.yaml): parsed once into typed specs; an unknown key or bad value is an error."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ssrl.config import (
    TRACKS,
    ConfigError,
    FinetuneConfig,
    PretrainConfig,
    PretrainedEntry,
    from_dict,
    require_nonnegative,
    require_positive,
)
from ssrl.errors import SweepError  # defined there so that error types import without Ray
from ssrl.kinds import KINDS, SweepKind, n_classes
from ssrl.report.tables import track_label

SWEEPS_DIR = Path(__file__).resolve().parents[2] / "sweeps"
SCALES = ("smoke", "demo", "cpu", "cpu-full", "paper")
PENDING = "<the encoder its pretraining hands on>"  # an SSL cell's pretrained file before a trial names it


@dataclass(frozen=True)
class Search:
    """Per-group Optuna search with ASHA; `enabled: false` fixes the learning rate.

    A search trial trains like the evaluation it chooses for: `epochs` is the sweep's `train.epochs`
    (set by load_sweep, not a key of the sweep file), so the cosine schedule and patience are the same.
    """

    enabled: bool = False
    samples_per_group: int = 8
    seed: int = 0
    epochs: int = 30  # = train.epochs, set by load_sweep
    lr: tuple[float, float] = (1e-4, 1e-2)
    weight_decay: tuple[float, float] = (1e-6, 1e-2)
    grace_period: int = 3
    reduction_factor: int = 3

    def __post_init__(self) -> None:
        require_positive(self, "samples_per_group", "epochs", "grace_period", "reduction_factor")
        require_nonnegative(self, "seed")


@dataclass(frozen=True)
class Resources:
    """What one trial asks of a node, and how often it checkpoints."""

    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    checkpoint_every: int = 1
    max_failures: int = 2  # retries of a trial that raised or lost its node (0 = none), each from its checkpoint

    def __post_init__(self) -> None:
        require_positive(self, "checkpoint_every")
        require_nonnegative(self, "cpus_per_trial", "gpus_per_trial", "max_failures")


@dataclass(frozen=True)
class Cell:
    """One comparison group: a track at a fraction (scarcity) or at N labelled (fewshot), and its BN statistics."""

    track: str
    fraction: float | None = None
    n_labelled: int | None = None
    bn_stats: str = ""  # "" = the sweep's train setting (precise by default); "running" = the reference protocol
    method: str = ""  # the pretraining an SSL track starts from ("" for every other track)

    def __post_init__(self) -> None:
        ssl = self.track in TRACKS and TRACKS[self.track].init == "ssl"
        if ssl != bool(self.method):
            raise ConfigError(f"cell {self.track}: " + ("an SSL track needs the pretraining method it starts from"
                                                        if ssl else f"only SSL tracks take a method ({self.method!r})"))

    @property
    def label(self) -> str:
        """The track as tables and plots name it: 'ssl_finetune[masked]' for an SSL track, else the track."""
        return track_label(self.track, self.method)

    @property
    def group(self) -> str:
        """Stable group name, e.g. 'ssl_finetune[simclr]@0.1', 'scratch@N70' or 'scratch@N70:running'."""
        at = f"{self.fraction}" if self.fraction is not None else f"N{self.n_labelled}"
        return f"{self.label}@{at}:{self.bn_stats}" if self.bn_stats else f"{self.label}@{at}"


@dataclass(frozen=True)
class SweepSpec:
    """One sweep at one scale, fully resolved."""

    name: str
    scale: str
    path: Path
    seeds: tuple[int, ...]
    train: dict[str, Any]
    resources: Resources
    data_records: int = 2000
    task: str = ""
    metric: str = ""
    pretrain_methods: tuple[str, ...] = ("simclr",)  # scarcity/fewshot: every SSL track runs once per method
    pretrained: tuple[PretrainedEntry, ...] = ()  # encoders pretrained elsewhere: SSL tracks run once per entry too
    methods: tuple[str, ...] = ()  # the pretrain sweep: the methods it pretrains
    cells: tuple[Cell, ...] = ()
    track_train: dict[str, dict[str, Any]] = field(default_factory=dict)
    search: Search = Search()

    @property
    def kind(self) -> SweepKind:
        """The benchmark this sweep is (ssrl.kinds): its cells' place, statistics, baseline and plot."""
        return KINDS[self.name]

    @property
    def ssl_methods(self) -> tuple[str, ...]:
        """The SSL methods this sweep pretrains (pretrain) or starts its SSL tracks from (the others)."""
        return self.pretrain_methods if self.kind.evaluates else self.methods

    @property
    def compared_methods(self) -> tuple[str, ...]:
        """Every encoder the SSL tracks start from: the methods pretrained here, then the entries pretrained elsewhere."""
        return self.pretrain_methods + tuple(e.name for e in self.pretrained)

    def external(self, method: str) -> PretrainedEntry | None:
        """The `pretrained:` entry of that name (None for a method pretrained here, or no method)."""
        return next((e for e in self.pretrained if e.name == method), None)

    @property
    def needs_pretraining(self) -> bool:
        """True when some cell starts from an SSL encoder that this project pretrains."""
        return any(TRACKS[c.track].init == "ssl" and c.method in self.pretrain_methods for c in self.cells)

    @property
    def searched_cells(self) -> tuple[Cell, ...]:
        """The cells whose learning rate and weight decay are searched (a hand-crafted control has none)."""
        return tuple(c for c in self.cells if TRACKS[c.track].fit == "sgd")

    def cell(self, group: str) -> Cell:
        """The cell of a group name (Cell.group)."""
        return next(c for c in self.cells if c.group == group)

    def training(self, cell: Cell) -> dict[str, Any]:
        """What a cell trains with at every seed, as FinetuneConfig settings: the sweep's train, its track's own,
        the cell's labelled subset and BatchNorm protocol. Each trial adds its data, seed and pretrained encoder."""
        own = {**self.train, **self.track_train.get(cell.track, {})}
        external = self.external(cell.method)
        if external is not None:  # its own encoder, built with its kwargs from the checkpoint the runner publishes
            own.update(encoder=external.encoder, encoder_width=0)
        return {**own, "task": self.task, "track": cell.track, "fraction": cell.fraction or 1.0,
                # the cell's key is N labelled in all; the trial draws N / classes records of each class
                "n_per_class": (cell.n_labelled or 0) // n_classes(self.task),
                # the cell's own BatchNorm protocol, else the sweep's (every cell sets it: eval samples per key)
                "bn_stats": cell.bn_stats or str(own.get("bn_stats", FinetuneConfig.bn_stats))}

    def finetune_config(self, cell: Cell, **trial: Any) -> FinetuneConfig:
        """``training(cell)`` typed and checked, with a trial's own settings (data_root, seed, pretrained) over it;
        an SSL cell's encoder, known only per trial, stands as PENDING until ``trial`` names it."""
        pending = {"pretrained": PENDING} if TRACKS[cell.track].init == "ssl" else {}
        return from_dict(FinetuneConfig, {**self.training(cell), **pending, **trial})


def load_sweep(name: str, scale: str, sweeps_dir: Path = SWEEPS_DIR) -> SweepSpec:
    """Read sweeps/<name>.yaml at a scale and check every key and value."""
    if name not in KINDS:
        raise SweepError(f"unknown sweep {name!r}; use one of {', '.join(KINDS)}")
    if scale not in SCALES:
        raise SweepError(f"unknown scale {scale!r}; use one of {', '.join(SCALES)}")
    path = sweeps_dir / f"{name}.yaml"
    raw = _read(path)
    try:
        return _resolve(name, scale, path, raw)
    except (ConfigError, TypeError, ValueError) as e:
        raise SweepError(f"{path} (scale {scale}): {e}") from None


def _read(path: Path, below: tuple[Path, ...] = ()) -> dict:
    """A sweep file's settings. ``extends: FILE`` (a path relative to this file) reads FILE first and lays this
    file over it: mappings merge key by key, scales included, and anything else (a list, a value) replaces."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SweepError(f"{path}: cannot read sweep file ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: a sweep file is a mapping of settings")
    if "extends" not in raw:
        return raw
    base = raw.pop("extends")
    if not isinstance(base, str) or not base.strip():
        raise SweepError(f"{path}: extends={base!r} must be the path of the sweep file this one changes, "
                         "relative to this file (e.g. extends: ../../sweeps/fewshot.yaml)")
    chain = (*below, path.resolve())
    target = (path.parent / base).resolve()
    if target in chain:
        raise SweepError(f"{path}: extends {base} makes a loop ({' -> '.join(str(p) for p in (*chain, target))}); "
                         "a sweep file may extend only a file that does not extend it back")
    if not target.is_file():
        raise SweepError(f"{path}: extends {base}, but {target} is not a file; give the path relative to {path.parent}")
    return _merge(_read(target, chain), raw, keep_scales=True)


def _resolve(name: str, scale: str, path: Path, raw: dict) -> SweepSpec:
    scales = raw.get("scales") or {}
    _renamed_keys(raw, scales)
    kind = KINDS[name]
    _no_unknown(raw, kind.keys, "top level")
    _no_unknown(scales, set(SCALES), "scales")
    merged = _merge(raw, scales.get(scale) or {})
    _no_unknown(merged, kind.keys, f"scales.{scale}")
    seeds = tuple(int(s) for s in merged.get("seeds", [42]))
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds {list(seeds)} must be a non-empty list without repeats")
    data = merged.get("data") or {}
    _no_unknown(data, {"records"}, "data")
    res = _typed(Resources, merged.get("resources") or {}, "resources")
    train = dict(merged.get("train") or {})
    common = {"seeds": seeds, "train": train, "resources": res, "data_records": int(data.get("records", 2000))}
    if not kind.evaluates:
        methods = tuple(merged.get("methods", ["simclr"]))
        from ssrl.tune.checks import check_pretrain  # torch: imported only once a sweep file is read

        for m in methods:  # keys and values, and every name (a plug-in is imported and built once) now
            check_pretrain(from_dict(PretrainConfig, {**train, "method": str(m)}))
        return SweepSpec(name, scale, path, methods=methods, **common)
    task, metric = merged.get("task", ""), merged.get("metric", "")
    n_classes(task)  # a known task
    external = _pretrained(merged.get("pretrained") or [])
    methods = _methods(merged.get("pretrain_methods", ["simclr"]), external)
    cells = _cells(kind, merged, task, methods + tuple(e.name for e in external))
    track_train = merged.get("track_train") or {}
    spec = SweepSpec(name, scale, path, task=task, metric=metric, cells=cells, track_train=track_train,
                     pretrain_methods=methods, pretrained=external, **common)
    _check_cells(spec)
    unknown_tt = sorted(set(track_train) - {c.track for c in cells})
    if unknown_tt:
        raise ConfigError(f"track_train names track(s) {unknown_tt} that this sweep does not run")
    return dataclasses.replace(spec, search=_search(merged.get("search") or {}, train, track_train))


def _check_cells(spec: SweepSpec) -> None:
    """Every cell's training config is valid, its augmentation suits the task, its encoder and head resolve."""
    from ssrl.augment import check_preset  # torch: imported only once a sweep file is read
    from ssrl.tune.checks import check_finetune

    named = set()  # (encoder, width, head, init) already resolved: a plug-in is built once, not per cell
    for cell in spec.cells:
        cfg = spec.finetune_config(cell)
        check_preset(cfg.spec.augment, spec.task)  # rhythm tasks refuse views that change heart rate
        own = spec.external(cell.method) is None  # an entry's encoder is built with its kwargs when it loads
        if (cfg.encoder, cfg.encoder_width, cfg.head, cfg.spec.init, own) not in named:
            check_finetune(cfg, own)  # encoder (registered or plug-in) and head resolve before Ray starts
            named.add((cfg.encoder, cfg.encoder_width, cfg.head, cfg.spec.init, own))


def _renamed_keys(raw: dict, scales: dict) -> None:
    """A key an older sweep file used is an error saying what it is called now."""
    for where in (raw, *[v for v in scales.values() if isinstance(v, dict)]):
        if "pretrain_method" in where:
            raise ConfigError(f"pretrain_method is now pretrain_methods, a list: write pretrain_methods: "
                              f"[{where['pretrain_method']}]")


def _methods(raw: Any, external: tuple[PretrainedEntry, ...] = ()) -> tuple[str, ...]:
    """pretrain_methods: a list of SSL methods without repeats (ssrl.ssl.METHODS); empty only beside `pretrained:`."""
    from ssrl.ssl import METHODS  # torch: imported only once a sweep file is read

    if isinstance(raw, str) or not isinstance(raw, list) or not (raw or external):
        raise ConfigError(f"pretrain_methods={raw!r} must be a list, e.g. [simclr, masked], non-empty unless "
                          "`pretrained:` names encoders pretrained elsewhere")
    methods = tuple(str(m) for m in raw)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"pretrain_methods names unknown method(s) {unknown}; use some of {', '.join(METHODS)} "
                          "or a plug-in 'package.module:Class'")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"pretrain_methods {list(methods)} repeats a method")
    clash = sorted({e.name for e in external} & (set(methods) | set(METHODS)))
    if clash:
        raise ConfigError(f"pretrained name(s) {clash} are names of SSL methods; name the entries otherwise")
    return methods


def _pretrained(raw: Any) -> tuple[PretrainedEntry, ...]:
    """`pretrained:`: encoders pretrained elsewhere, each checked field by field (the files load before Ray)."""
    from ssrl.train.external import lead_index  # torch: imported only once a sweep file is read

    if not isinstance(raw, list):
        raise ConfigError(f"pretrained={raw!r} must be a list of entries {{name, encoder, weights, ...}}")
    entries = tuple(PretrainedEntry.from_raw(r) for r in raw)
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ConfigError(f"pretrained names {names} repeat a name")
    for e in entries:
        lead_index(e.leads, f"pretrained {e.name}")
    return entries


def _search(raw: dict, train: dict, track_train: dict) -> Search:
    """The search settings, training for the evaluation's epochs (and so with its LR schedule)."""
    if "epochs" in raw:
        raise ConfigError("search.epochs is not a setting: the search trains with the evaluation's epoch "
                          "budget and learning-rate schedule (train.epochs); remove it")
    search = _typed(Search, raw, "search")
    epochs = int(train.get("epochs", FinetuneConfig.epochs))
    own = sorted(t for t, o in track_train.items() if int(o.get("epochs", epochs)) != epochs)
    if search.enabled and own:
        raise ConfigError(f"track_train gives {own} epochs of their own, but the search trains every group with "
                          f"train.epochs={epochs}; set epochs in train only")
    if search.enabled and search.grace_period > epochs:
        raise ConfigError(f"search.grace_period={search.grace_period} is longer than train.epochs={epochs}")
    return dataclasses.replace(search, epochs=epochs)


def _cells(kind: SweepKind, merged: dict, task: str, methods: tuple[str, ...]) -> tuple[Cell, ...]:
    """The sweep's comparison groups (the kind lists them); an SSL track becomes one cell per pretraining method."""
    plain = kind.list_cells(merged, task)
    if not plain:
        raise ConfigError("the sweep has no cells (tracks x fractions, or conditions)")
    for c in plain:
        if c["track"] not in TRACKS:
            raise ConfigError(f"track {c['track']!r} is unknown; use one of {', '.join(TRACKS)}")
    default_bn = str((merged.get("train") or {}).get("bn_stats", FinetuneConfig.bn_stats))
    seen = [(c["track"], c.get("fraction"), c.get("n_labelled"), c.get("bn_stats") or default_bn) for c in plain]
    if len(set(seen)) != len(seen):
        raise ConfigError(f"conditions repeat a (track, n, bn_stats): {sorted({s for s in seen if seen.count(s) > 1})}")
    return tuple(Cell(**c, method=m) for c in plain
                 for m in (methods if TRACKS[c["track"]].init == "ssl" else ("",)))


def _merge(base: dict, over: dict, keep_scales: bool = False) -> dict:
    """``over`` laid on ``base``: mappings merge key by key, anything else replaces; a scale's settings are laid on
    the top level without its ``scales``, a file on the file it extends with them (``keep_scales``)."""
    out = copy.deepcopy({k: v for k, v in base.items() if keep_scales or k != "scales"})
    for k, v in over.items():
        out[k] = _merge(out[k], v, True) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _no_unknown(d: dict, known: set[str], where: str) -> None:
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping")
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(sorted(known))}")


def _typed(cls: type, d: dict, where: str) -> Any:
    """A sweep-file section as its dataclass: the keys it knows, values coerced and checked as every config's."""
    _no_unknown(d, set(cls.__dataclass_fields__), where)
    try:
        return from_dict(cls, d)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
