"""The driver's checks of a run config before Ray starts: every name resolves, and a plug-in builds and runs once.

A plug-in encoder or method that does not import, build or give (B, out_dim) fails here with one line
(ssrl.registry.PluginError), not in a Ray worker minutes later.
"""

from __future__ import annotations

from typing import Any

from ssrl.config import ConfigError
from ssrl.registry import PluginError, is_plugin


def _encoder(cfg: Any, setting: str = "encoder") -> Any:
    """A built encoder of cfg (a plug-in is also run once: its output must be (B, out_dim))."""
    import torch

    from ssrl.models import build_encoder, encoder_kwargs

    kwargs = encoder_kwargs(cfg.encoder_width)
    call = f"{cfg.encoder}(in_leads=12{''.join(f', {k}={v}' for k, v in kwargs.items())})"
    try:
        encoder = build_encoder(cfg.encoder, in_leads=12, **kwargs)
    except PluginError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's constructor: one line
        raise PluginError(f"{setting} {cfg.encoder!r}: building {call} failed ({type(e).__name__}: "
                          f"{(str(e).splitlines() or [''])[0][:160]}); accept in_leads and width keyword arguments"
                          ) from None
    try:
        with torch.no_grad():
            h = encoder.eval()(torch.zeros(2, 12, 10 * cfg.sampling_rate))  # x: (2, 12, T) -> h: (2, out_dim)
    except Exception as e:  # noqa: BLE001
        raise PluginError(f"{setting} {cfg.encoder!r}: forward on a (2, 12, {10 * cfg.sampling_rate}) batch failed "
                          f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]})") from None
    if tuple(h.shape) != (2, encoder.out_dim):
        raise PluginError(f"{setting} {cfg.encoder!r}: forward returned shape {tuple(h.shape)} for 2 records, "
                          f"but out_dim is {encoder.out_dim}; return (B, out_dim)")
    return encoder.train()


def check_pretrain(cfg: Any) -> None:
    """Resolve a PretrainConfig's encoder, method and augmentation; a plug-in is built (and run) once."""
    from ssrl.augment import check_preset
    from ssrl.models import ENCODERS
    from ssrl.ssl import METHODS, build_method

    for name, registry in ((cfg.encoder, ENCODERS), (cfg.method, METHODS)):
        if name not in registry:
            raise registry.unknown(name)
    check_preset(cfg.augment)
    if is_plugin(cfg.encoder) or is_plugin(cfg.method):
        try:
            build_method(cfg.method, _encoder(cfg), cfg)
        except PluginError:
            raise
        except Exception as e:  # noqa: BLE001 - e.g. masked needs feature_map; the user's constructor
            raise PluginError(f"method {cfg.method!r} on encoder {cfg.encoder!r}: building it failed "
                              f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})") from None


def check_finetune(cfg: Any, own_encoder: bool = True) -> None:
    """Resolve a FinetuneConfig's encoder and head (its track and augmentation are checked where it is made).

    own_encoder=False: the encoder is one pretrained elsewhere, built with its own kwargs by its loader.
    """
    from ssrl.models import ENCODERS, HEADS

    if cfg.spec.init != "handcrafted" and own_encoder:
        if cfg.encoder not in ENCODERS:
            raise ENCODERS.unknown(cfg.encoder)
        if is_plugin(cfg.encoder):
            _encoder(cfg)
    if cfg.head not in HEADS:
        raise ConfigError(f"head {cfg.head!r} is unknown; use one of {', '.join(sorted(HEADS))}")
