"""Plug-in names and the registry every plug-in point is: an encoder or SSL method named ``package.module:Class``
is imported, checked and registered on first use.

A sweep passes the name, never the class, so every process (the driver and each Ray worker) imports
the module itself: it must be importable wherever trials run (installed, or on PYTHONPATH).
``Registry`` is the dict that ``ssrl.models.ENCODERS`` and ``ssrl.ssl.METHODS`` are: a registered name
is looked up as before; a ``module:Class`` name is resolved on first use. It sits below both (it imports
neither); the driver's checks of a whole run config before Ray starts are ``ssrl.tune.checks``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from ssrl.config import ConfigError

T = TypeVar("T")
HINT = "install its package or add its folder to PYTHONPATH (on every Ray node too)"


class PluginError(ConfigError):
    """A name that does not resolve to a usable class; the message names the setting, the name and what to do."""


def is_plugin(name: object) -> bool:
    """True for a plug-in name 'package.module:Class' (registered names have no colon)."""
    return isinstance(name, str) and ":" in name


def load_class(setting: str, name: str) -> type:
    """The torch.nn.Module subclass a 'package.module:Class' name points to; PluginError otherwise."""
    from torch import nn

    module_name, _, attr = name.partition(":")
    if not module_name or not attr or not all(p.isidentifier() for p in [*module_name.split("."), *attr.split(".")]):
        raise PluginError(f"{setting} {name!r} is not a plug-in name; write 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise PluginError(f"{setting} {name!r}: module {module_name!r} is not importable ({e}); {HINT}") from None
        raise PluginError(f"{setting} {name!r}: importing {module_name!r} failed ({e}); install what it imports"
                          ) from None
    except Exception as e:  # noqa: BLE001 - any error in the user's module becomes one line
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise PluginError(f"{setting} {name!r}: importing {module_name!r} failed ({type(e).__name__}: {first}); "
                          "fix that module") from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if obj is None:
        defined = sorted(k for k, v in vars(module).items() if inspect.isclass(v) and issubclass(v, nn.Module)
                         and v.__module__ == module.__name__)
        raise PluginError(f"{setting} {name!r}: module {module_name!r} has no class {attr!r}; fix the name after "
                          f"':' (its torch.nn.Module classes: {', '.join(defined) or 'none'})")
    if not (inspect.isclass(obj) and issubclass(obj, nn.Module)):
        raise PluginError(f"{setting} {name!r} is not a class deriving from torch.nn.Module; point it at one")
    return obj


class Registry(dict[str, T]):
    """name -> class; a 'module:Class' name is imported, checked by ``check(name, cls)`` and registered on first use.

    ``name in registry`` and ``registry[name]`` resolve a plug-in name, raising PluginError when it does
    not resolve; a plain name is looked up as in any dict.
    """

    def __init__(self, setting: str, check: Callable[[str, type], None], items: dict[str, T]) -> None:
        super().__init__(items)
        self.setting, self.check = setting, check

    def __contains__(self, name: object) -> bool:
        """True for a registered name or a plug-in name that resolves (one that does not raises)."""
        if dict.__contains__(self, name):
            return True
        if is_plugin(name):
            self.resolve(name)  # type: ignore[arg-type]
            return True
        return False

    def __missing__(self, name: str) -> T:
        if is_plugin(name):
            return self.resolve(name)
        raise KeyError(name)

    def resolve(self, name: str) -> T:
        """The class of ``name``, importing, checking and registering a plug-in name."""
        if dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        cls = load_class(self.setting, name)
        self.check(name, cls)
        self[name] = cls  # type: ignore[assignment]
        return cls  # type: ignore[return-value]

    def unknown(self, name: str) -> PluginError:
        """The error for a name that is neither registered nor a plug-in name."""
        return PluginError(f"{self.setting} {name!r} is unknown; use one of {', '.join(sorted(self))} "
                           "or a plug-in 'package.module:Class'")


def check_encoder_instance(name: str, encoder: Any) -> None:
    """PluginError unless a built plug-in encoder exposes a positive int ``out_dim``."""
    out_dim = getattr(encoder, "out_dim", None)
    if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim <= 0:
        raise PluginError(f"encoder {name!r}: {type(encoder).__name__} lacks out_dim; set self.out_dim in __init__ "
                          "to the size of the (B, out_dim) embedding that forward returns")
