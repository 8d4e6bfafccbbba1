"""The registry object: one MLflow store, and what the pipeline does with it."""

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from monitoring_pipelines.ml.registry import loading, logging, promotion, tracking
from monitoring_pipelines.ml.registry import rollback as rollback_module
from monitoring_pipelines.ml.registry.tracking import TrackingTarget
from monitoring_pipelines.settings import redact_url

if TYPE_CHECKING:
    from mlflow import MlflowClient


class ModelRegistry:
    """Detectors logged, promoted, rolled back and loaded in one MLflow store.

    Build it from the store's tracking URI and the folder experiments keep artifacts in (required
    for a database backend); Dagster assets get one from ``MlflowResource.registry()``. Nothing is
    read from settings or the environment here. Every operation points MLflow at this store for
    its own duration only (:meth:`activate`), so registries on different stores can be used side
    by side in one process.

    The operations live one concern per module, each taking the registry as first argument:
    :func:`~.logging.log_candidate`, :func:`~.promotion.promote_if_not_worse`,
    :func:`~.promotion.register_challenger`,
    :func:`~.rollback.rollback`, :func:`~.loading.load_by_alias`,
    :func:`~.loading.champion_versions`.
    """

    def __init__(
        self,
        tracking_uri: str,
        artifact_root: Path | str | None = None,
        *,
        cache_dir: Path | str | None = None,
    ):
        self.target = TrackingTarget.of(tracking_uri, artifact_root, cache_dir)
        # Detectors loaded by alias, reused while this registry lives (versions never change).
        self.loaded = loading.DetectorCache()

    def __repr__(self) -> str:
        return f"ModelRegistry({redact_url(self.target.uri)!r})"

    @contextlib.contextmanager
    def activate(self) -> Iterator[TrackingTarget]:
        """MLflow's process-wide tracking and registry URIs point at this store inside the block.

        The operations open it themselves; use it around direct MLflow calls that resolve
        ``models:/`` URIs, such as ``mlflow.pyfunc.load_model("models:/<name>@champion")``.
        """
        self.target.prepare()
        with tracking.pointed_at(self.target.uri):
            yield self.target

    def client(self) -> "MlflowClient":
        """An ``MlflowClient`` on this store (needs no :meth:`activate`)."""
        return tracking.client(self.target)

    def clear_cache(self) -> None:
        """Forget loaded detectors (files downloaded under the cache folder stay)."""
        self.loaded.clear()

    log_candidate = logging.log_candidate
    promote_if_not_worse = promotion.promote_if_not_worse
    register_challenger = promotion.register_challenger
    rollback = rollback_module.rollback
    load_by_alias = loading.load_by_alias
    champion_versions = loading.champion_versions
    alias_infos = loading.alias_infos
