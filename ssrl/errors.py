"""The errors that mean bad input: shown as one line, never as a traceback.

SweepError and TrackingError are defined here, not in ssrl.tune, so that importing an error type
never pulls Ray or MLflow in (ssrl.tune.spec and ssrl.tune.tracking re-export them).
"""

from ssrl.config import ConfigError
from ssrl.data import DataError
from ssrl.train.checkpoint import CheckpointError


class SweepError(ValueError):
    """A sweep file or choice that cannot run; the message names the file and the setting."""


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message names it and what to do."""


USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError, CheckpointError, SweepError, TrackingError)
