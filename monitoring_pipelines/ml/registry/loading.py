"""Loading champions: the real detector behind an alias, downloaded once, loaded once.

The pipeline does not go through pyfunc: :func:`load_by_alias` downloads the version's detector
directory into the registry's cache folder and rebuilds the detector with the loader recorded on
the version, so it keeps the detector's full interface.
"""

import hashlib
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

from monitoring_pipelines.ml.catalogue import KINDS
from monitoring_pipelines.ml.registry import tracking
from monitoring_pipelines.ml.registry.pyfunc import LoadFn, loader_key, resolve
from monitoring_pipelines.ml.registry.tracking import Store, TrackingTarget
from monitoring_pipelines.ml.registry.versions import (
    CHAMPION,
    DETECTOR_ARTIFACT,
    LOADER_TAG,
    ModelNotFound,
    VersionInfo,
    alias_version,
    registered_model_name,
    version_info,
)

_CACHE_SIZE = 16


class DetectorCache:
    """Detectors already loaded, newest last, at most ``size`` of them; safe across threads."""

    def __init__(self, size: int = _CACHE_SIZE):
        self.size = size
        self._items: OrderedDict[tuple[str, int, str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, str, str]) -> Any | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: tuple[str, int, str, str], detector: Any) -> None:
        with self._lock:
            self._items[key] = detector
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class CachingStore(Store, Protocol):
    """A store that keeps the detectors it loaded (``ModelRegistry``)."""

    loaded: DetectorCache


def load_by_alias(
    registry: CachingStore,
    kind: str,
    scope: str,
    alias: str = CHAMPION,
    *,
    load_fn: LoadFn | None = None,
) -> tuple[Any, VersionInfo]:
    """The real detector behind ``models:/anomaly-<kind>-<scope>@<alias>``, and its version.

    The alias is resolved on every call (cheap), the detector is downloaded and loaded once per
    registry and version: versions never change, so a moved alias is picked up while repeated
    calls in a run reuse the object. ``load_fn`` defaults to the loader recorded when the version
    was logged. Raises :class:`ModelNotFound` when there is no such model or alias.
    """
    name = registered_model_name(kind, scope)
    with registry.activate() as target:
        client = tracking.client(target)
        version = alias_version(client, name, alias)
        if version is None:
            raise ModelNotFound(f"{name} has no version with alias {alias!r}")
        info = version_info(client, name, version)
        loader_ref = loader_key(load_fn) if load_fn else info.tags.get(LOADER_TAG)
        if not loader_ref:
            raise ModelNotFound(f"{name} v{version} has no {LOADER_TAG} tag; pass load_fn")
        key = (name, version, info.run_id or "", loader_ref)
        detector = registry.loaded.get(key)
        if detector is None:
            detector = (load_fn or resolve(loader_ref))(_download(target, info))
            registry.loaded.put(key, detector)
    return detector, info


def champion_versions(
    registry: Store, scope: str, kinds: tuple[str, ...] = KINDS
) -> dict[str, int]:
    """``{kind: champion version}`` for the kinds of ``scope`` that have a champion."""
    return {
        kind: info.version for kind, info in alias_infos(registry, scope, CHAMPION, kinds).items()
    }


def alias_infos(
    registry: Store, scope: str, alias: str, kinds: tuple[str, ...] = KINDS
) -> dict[str, VersionInfo]:
    """``{kind: version}`` (tags and description included) behind ``alias`` for the kinds of
    ``scope`` that have one; nothing is downloaded."""
    out = {}
    with registry.activate() as target:
        client = tracking.client(target)
        for kind in kinds:
            name = registered_model_name(kind, scope)
            version = alias_version(client, name, alias)
            if version is not None:
                out[kind] = version_info(client, name, version)
    return out


def _download(target: TrackingTarget, info: VersionInfo) -> Path:
    """The version's detector directory, downloaded once into the cache folder."""
    import mlflow
    from mlflow.models import Model

    uri_key = hashlib.sha256(target.uri.encode()).hexdigest()[:12]
    final = target.cache_dir / uri_key / info.name / f"{info.version}-{(info.run_id or '')[:12]}"
    if not final.exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=final.parent))
        try:
            mlflow.artifacts.download_artifacts(
                artifact_uri=info.model_uri, dst_path=str(staging), tracking_uri=target.uri
            )
            try:
                staging.rename(final)
            except OSError:
                # Another process finished the same download first; theirs is as good.
                if not final.exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    flavor = Model.load(str(final)).flavors["python_function"]
    return final / flavor["artifacts"][DETECTOR_ARTIFACT]["path"]
