"""The errors that mean bad input: shown as one line, never as a traceback."""

from ssrl.config import ConfigError
from ssrl.data import DataError
from ssrl.train.checkpoint import CheckpointError
from ssrl.tune.spec import SweepError
from ssrl.tune.tracking import TrackingError

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError, CheckpointError, SweepError, TrackingError)
