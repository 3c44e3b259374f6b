"""The store: features, data, runs, model versions, the prediction log, feedback, audit.

SQLite at ``$FLYWHEEL_HOME/flywheel.db`` (WAL mode) by default; Postgres or another
database through ``FLYWHEEL_DB_URL``. The schema is managed by Alembic migrations that
ship inside the package (``aiflywheel/migrations/versions``): opening a store upgrades
it to the newest revision, so a new release never needs a manual step, and
``flywheel db status`` shows the revision. Changing a table means adding a migration
(``alembic revision`` against this metadata), never editing an old one.
"""

from aiflywheel.store.audit import AuditStore
from aiflywheel.store.base import MIGRATIONS_DIR, StoreBase
from aiflywheel.store.features import FeaturesStore
from aiflywheel.store.keys import KeysStore, hash_secret
from aiflywheel.store.runs import RunsStore, code_version, new_run_id
from aiflywheel.store.schema import (
    API_KEY_ROLES,
    MODEL_STATUSES,
    REVIEW_STATES,
    THUMBS,
    ApiKey,
    AuditEvent,
    Base,
    DatasetVersion,
    Feature,
    Feedback,
    FeedbackOutcome,
    ModelVersion,
    PredictionLog,
    Run,
    ShadowPrediction,
    utcnow,
)
from aiflywheel.store.serving import FeedbackItem, ServingStore
from aiflywheel.store.versions import VersionsStore


class Store(FeaturesStore, RunsStore, VersionsStore, AuditStore, KeysStore, ServingStore):
    """Records features, dataset versions, runs, model versions, audit events, API keys,
    the prediction log and feedback. Open with ``Store(url)``; each table group is a module
    of this package (``store/runs.py``, ``store/serving.py``, ...)."""


def open_store() -> Store:
    """The store named by the runtime settings; runs whose process died are marked failed."""
    from aiflywheel.core.runs import recover_stale_runs
    from aiflywheel.settings import get_settings

    settings = get_settings()
    store = Store(settings.store_url)
    recover_stale_runs(store, settings.runs_dir)
    return store


__all__ = [
    "API_KEY_ROLES",
    "MIGRATIONS_DIR",
    "MODEL_STATUSES",
    "REVIEW_STATES",
    "THUMBS",
    "ApiKey",
    "AuditEvent",
    "Base",
    "DatasetVersion",
    "Feature",
    "Feedback",
    "FeedbackItem",
    "FeedbackOutcome",
    "ModelVersion",
    "PredictionLog",
    "Run",
    "ShadowPrediction",
    "Store",
    "StoreBase",
    "code_version",
    "hash_secret",
    "new_run_id",
    "open_store",
    "utcnow",
]
