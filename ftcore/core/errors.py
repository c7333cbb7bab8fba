"""Errors raised by ftcore.

Every error the user can cause is an :class:`FtcoreError`; each subclass also
subclasses the matching built-in exception so that callers that do not know
ftcore still catch it sensibly. The UI shows ``str(error)`` to the user, so
messages say what was given, what is allowed and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "FtcoreError",
    "ConfigError",
    "BackboneError",
    "WeightsError",
    "DatasetError",
    "RunStoreError",
    "TrainingError",
]


class FtcoreError(Exception):
    """Base class of every error that ftcore raises on purpose."""


class ConfigError(FtcoreError, ValueError):
    """A run configuration value is out of range or inconsistent."""


class BackboneError(FtcoreError, ValueError):
    """The backbone name is unknown to timm or the model cannot be built."""


class WeightsError(FtcoreError, ValueError):
    """Pretrained weights cannot be found, read, or do not fit the backbone."""


class DatasetError(FtcoreError, ValueError):
    """The image folder cannot be used for training as given."""


class RunStoreError(FtcoreError, LookupError):
    """A run is missing from the run store, or the store cannot be used."""


class TrainingError(FtcoreError, RuntimeError):
    """Training stopped for a reason the user can act on (e.g. non-finite loss)."""
