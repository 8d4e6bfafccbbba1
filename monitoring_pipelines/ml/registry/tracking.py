"""Where a registry writes: its tracking target, MLflow's process-wide URIs, client, experiments.

MLflow keeps the tracking and registry URIs as process globals, and its fluent API (``start_run``,
``log_model``, ``register_model``, ``models:/`` downloads) reads them. :func:`pointed_at` sets them
for one operation and puts the previous ones back, under a process-wide lock, so two registries on
different stores in one process (tests, a CLI next to a run) never write to each other's store.
"""

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "anomaly-detectors"
# Backends where MLflow runs in-process with no server: without an explicit artifact location it
# writes artifacts to ./mlruns under whatever the current directory is.
_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
# Reentrant: an operation of one registry may run inside another's block (nested blocks restore).
_mlflow_globals = threading.RLock()


@dataclass(frozen=True)
class TrackingTarget:
    """One MLflow store: its URI, where experiments put artifacts, where versions are downloaded.

    ``artifact_root`` is required for database backends (otherwise MLflow writes to ``./mlruns``);
    a tracking server (http/https) keeps its own artifact store and may leave it ``None``, then
    ``cache_dir`` must be given. By default downloads go to ``model-cache`` beside the artifacts.
    """

    uri: str
    artifact_root: Path | None
    cache_dir: Path

    @classmethod
    def of(
        cls, uri: str, artifact_root: Path | str | None = None, cache_dir: Path | str | None = None
    ) -> "TrackingTarget":
        if not uri:
            raise ValueError("an MLflow tracking URI is required")
        root = Path(artifact_root).expanduser().resolve() if artifact_root is not None else None
        if root is None and _scheme(uri) in _DB_SCHEMES:
            raise ValueError(
                f"a {_scheme(uri)} tracking store needs an artifact_root, or MLflow writes "
                "artifacts to ./mlruns"
            )
        if cache_dir is not None:
            cache = Path(cache_dir).expanduser().resolve()
        elif root is not None:
            # Versions never change, so downloads are kept beside the artifacts for good.
            cache = root.parent / "model-cache"
        else:
            raise ValueError("without an artifact_root, give the cache_dir for downloaded models")
        return cls(uri=uri, artifact_root=root, cache_dir=cache)

    def prepare(self) -> None:
        """Create the local folders the store needs (the SQLite file's folder, the artifacts)."""
        if self.artifact_root is not None:
            self.artifact_root.mkdir(parents=True, exist_ok=True)
        if _scheme(self.uri) == "sqlite":
            _sqlite_parent(self.uri).mkdir(parents=True, exist_ok=True)


class Store(Protocol):
    """What the registry's operations need of it: the target, and MLflow pointed at it.

    ``ModelRegistry`` is the one implementation; the operations (logging, promotion, loading) take
    it as their first argument and ask for no more than this.
    """

    target: TrackingTarget

    def activate(self) -> AbstractContextManager[TrackingTarget]: ...


@contextlib.contextmanager
def pointed_at(uri: str) -> Iterator[None]:
    """MLflow's tracking and registry URIs (and their environment variables) are ``uri`` inside.

    The previous values are restored on exit. The lock is held for the whole block: MLflow's URIs
    are process-wide, so another thread's operation on another store waits instead of mixing in.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with _mlflow_globals:
        previous_env = {key: os.environ.get(key) for key in _URI_ENV}
        # MLflow keeps the URIs as module globals; restoring them by value is what its own
        # _use_tracking_uri does, so nested blocks and tests on several backends do not leak.
        previous = (
            getattr(tracking_utils, "_tracking_uri", None),
            getattr(registry_utils, "_registry_uri", None),
        )
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous[0])
            mlflow.set_registry_uri(previous[1])
            for key, value in previous_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def client(target: TrackingTarget) -> "MlflowClient":
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=target.uri, registry_uri=target.uri)


def experiment_id(client: "MlflowClient", name: str, target: TrackingTarget) -> str:
    """The experiment's id, created (artifacts under the target's root) or restored if needed."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if target.artifact_root is not None:
            location = (target.artifact_root / _slug(name)).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:
            # Another process created it between our lookup and create.
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    root = target.artifact_root
    if root is not None and not experiment.artifact_location.startswith(root.as_uri()):
        logger.warning(
            "experiment %s keeps its artifacts at %s, outside %s",
            name,
            experiment.artifact_location,
            root,
        )
    return experiment.experiment_id


def _scheme(uri: str) -> str:
    return uri.split(":", 1)[0].split("+", 1)[0].lower()


def _sqlite_parent(uri: str) -> Path:
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    return Path(database).expanduser().resolve().parent if database else Path.cwd()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "experiment"
