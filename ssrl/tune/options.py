"""What one invocation asks for: launch.py's options, and the scale and sweep specs they resolve to (no Ray)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ssrl.config import PRECISIONS
from ssrl.tune.dataset import real_data_given
from ssrl.tune.spec import SweepError, SweepSpec, load_sweep


@dataclass(frozen=True)
class LaunchOptions:
    """What launch.py passes in; None means 'the sweep file's or the machine's default'."""

    sweep: str
    scale: str | None = None
    data_root: str | None = None
    sampling_rate: int = 100
    out: str = "runs"
    storage: str | None = None
    address: str | None = None
    tracking_uri: str | None = None
    gpus_per_trial: float | None = None
    cpus_per_trial: float | None = None
    max_concurrent: int | None = None
    resume: bool = False
    sweeps_dir: str | None = None  # folder of sweep files (default: sweeps/ of this checkout)
    precision: str | None = None  # auto | fp32 | bf16 over the sweep files' train.precision
    verbose: bool = False  # Ray's and Tune's own output on the console instead of <out>/logs/
    dry_run: bool = False  # print the plan; start nothing, write nothing


def _load(name: str, scale: str, opts: LaunchOptions) -> SweepSpec:
    """A sweep file from --sweeps-dir, else from the checkout's sweeps/; --precision over its train.precision."""
    spec = load_sweep(name, scale, Path(opts.sweeps_dir).expanduser().resolve()) if opts.sweeps_dir else (
        load_sweep(name, scale))
    if opts.precision is None:
        return spec
    if opts.precision not in PRECISIONS:
        raise SweepError(f"--precision {opts.precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
    track_train = {t: {k: v for k, v in o.items() if k != "precision"} for t, o in spec.track_train.items()}
    return dataclasses.replace(spec, train={**spec.train, "precision": opts.precision}, track_train=track_train)


def scale_of(opts: LaunchOptions) -> tuple[str, str]:
    """The scale to run and why: --scale, else paper on real PTB-XL and demo on the synthetic one."""
    if opts.scale:
        return opts.scale, "--scale"
    return ("paper", "the default on real PTB-XL") if real_data_given(opts.data_root) else (
        "demo", "the default on synthetic data: no PTB-XL found")


def specs(opts: LaunchOptions, scale: str) -> tuple[SweepSpec, SweepSpec | None]:
    """The sweep's spec and the pretraining spec it needs (the sweep itself for pretrain; else None)."""
    spec = _load(opts.sweep, scale, opts)
    pre_spec = spec if not spec.kind.evaluates else (
        _load("pretrain", scale, opts) if spec.needs_pretraining else None)
    return spec, pre_spec
