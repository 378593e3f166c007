"""Self-supervised losses (pure functions) and methods (registry)."""

from __future__ import annotations

from torch import nn

from ssrl.config import PretrainConfig
from ssrl.registry import PluginError, Registry
from ssrl.ssl.losses import byol_loss, masked_mse, nt_xent
from ssrl.ssl.masked import Masked, random_mask
from ssrl.ssl.methods import BYOL, SimCLR, SSLMethod

CALLED = ("inputs", "loss", "on_step_end")  # what the pretraining loop calls on a method, beside nn.Module's


def check_method_class(name: str, cls: type) -> None:
    """PluginError unless a plug-in method class has the callables the pretraining loop uses, loss its own."""
    lacks = [a for a in CALLED if not callable(getattr(cls, a, None))]
    if getattr(cls, "loss", None) is SSLMethod.loss:
        lacks.insert(0, "loss")
    if lacks:
        raise PluginError(f"method {name!r}: class {cls.__name__} lacks {', '.join(lacks)}; subclass "
                          "ssrl.ssl.SSLMethod (it gives inputs and on_step_end) and define loss(*inputs) -> Tensor")


# Every method is built as Method(encoder, cfg) and reads the PretrainConfig settings it needs;
# a plug-in 'package.module:Class' is resolved on first use (ssrl.registry, docs/EXTENDING.md).
METHODS: Registry[type[SSLMethod]] = Registry("method", check_method_class,
                                              {"simclr": SimCLR, "byol": BYOL, "masked": Masked})


def build_method(name: str, encoder: nn.Module, cfg: PretrainConfig | None = None) -> SSLMethod:
    """Wrap ``encoder`` in the SSL method ``name`` (registered or a plug-in), set up from ``cfg`` (defaults if None)."""
    if name not in METHODS:
        raise METHODS.unknown(name)
    method = METHODS[name](encoder, cfg if cfg is not None else PretrainConfig())
    if getattr(method, "encoder", None) is not encoder:
        raise PluginError(f"method {name!r}: {type(method).__name__} does not keep its encoder as self.encoder "
                          "(the encoder that is saved); call super().__init__(encoder, cfg)")
    return method


__all__ = ["BYOL", "METHODS", "Masked", "SSLMethod", "SimCLR", "build_method", "byol_loss", "masked_mse",
           "nt_xent", "random_mask"]
