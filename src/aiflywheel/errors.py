"""The one error tree of aiflywheel.

Every error a user can cause is a ``FlywheelError``; its message names the bad value
and what was expected, in one line. The CLI prints it without a traceback and exits 2;
the API maps it to a 4xx answer with the same message.

::

    FlywheelError
    ├── RecipeError          a recipe file or value is wrong (unknown key, bad range)
    ├── SettingsError        a runtime setting (environment variable) is wrong
    ├── DataError            data cannot be used as given
    │   ├── IngestError      a source cannot be read (missing, empty, binary, encoding,
    │   │                    delimiter, absent column, malformed JSON)
    │   └── SplitError       a split cannot be made (one class, too few rows or groups)
    ├── ModelError           a model cannot be resolved, trained or used as asked
    │   ├── NotFittedError   predict/save before fit
    │   └── TrainingInterrupted  Ctrl-C during training: checkpoint saved, rerun resumes
    ├── Interrupted          Ctrl-C with the work done so far saved: the same command
    │                        resumes (TrainingInterrupted is one; the CLI exits 130)
    ├── MissingExtraError    an optional dependency is not installed (names the pip line)
    ├── NotFoundError        a named thing does not exist (feature, version, prediction, key)
    ├── ConflictError        a request contradicts stored state (idempotency key reused
    │                        with another payload, nothing to roll back to)
    ├── StoreError           the store cannot be opened or written (the API answers 503)
    └── UpstreamError        a remote service we call (an OpenAI-compatible endpoint) failed
        └── UpstreamTimeout  ... or did not answer in time (the API answers 504, else 502)
"""

from __future__ import annotations


class FlywheelError(Exception):
    """Base of every error a user of aiflywheel can cause or fix."""


class RecipeError(FlywheelError):
    """A recipe file or one of its values is invalid."""


class SettingsError(FlywheelError):
    """A runtime setting (FLYWHEEL_* environment variable) is invalid."""


class DataError(FlywheelError):
    """Data cannot be used as given."""


class IngestError(DataError):
    """A data source cannot be read."""


class SplitError(DataError):
    """A train/val/test split cannot be made from the data."""


class ModelError(FlywheelError):
    """A model cannot be resolved, trained or used as asked."""


class NotFittedError(ModelError):
    """A model was used before ``fit``."""


class Interrupted(FlywheelError):
    """Stopped on SIGINT after saving what was done; the same command resumes."""


class TrainingInterrupted(ModelError, Interrupted):
    """Training stopped on SIGINT after saving a checkpoint; the same command resumes."""


class MissingExtraError(FlywheelError):
    """An optional dependency is missing; the message says which pip line installs it."""

    def __init__(self, what: str, install: str) -> None:
        super().__init__(f"{what} needs an optional dependency: run `{install}`")
        self.install = install


class NotFoundError(FlywheelError):
    """A feature, model version, prediction or key with that name or id does not exist."""


class ConflictError(FlywheelError):
    """A request contradicts what is stored (e.g. an idempotency key with another payload)."""


class StoreError(FlywheelError):
    """The store (database) cannot be opened or written."""


class UpstreamError(FlywheelError):
    """A remote service aiflywheel calls (e.g. an OpenAI-compatible endpoint) failed;
    the message names its URL. The API answers 502."""


class UpstreamTimeout(UpstreamError):
    """A remote service did not answer within its timeout; the API answers 504."""


def require_module(module: str, *, what: str, install: str):
    """Import ``module`` or raise ``MissingExtraError`` naming the ``install`` line."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(what, install) from exc
