"""A set of detectors of one kind, one per group (a tenant's services), saved and loaded together.

This is the unit logged to MLflow per detector kind and tenant: a directory with one sub-directory
per group (each a :meth:`Detector.save` directory) and ``manifest.json`` naming the kind, the
detector class and which sub-directory holds which group.

It holds :class:`DetectorSet`; the module keeps the name ``model_set`` because every model version
already logged names its loader by this import path (``monitoring_pipelines.ml.model_set:
DetectorSet.load``, see ``tests/data/registry``): renaming it would strand them.
"""

import importlib
import json
import os
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

import pandas as pd

from monitoring_pipelines.ml.base import Detector, DetectorConfig

MANIFEST = "manifest.json"
GroupKey = tuple[str, ...]


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _resolve(path: str) -> type[Detector]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _dir_name(number: int, key: GroupKey) -> str:
    readable = "_".join(re.sub(r"[^A-Za-z0-9_.-]", "-", part) for part in key) or "all"
    return f"{number:03d}_{readable}"


class DetectorSet:
    def __init__(self, kind: str, detectors: Mapping[GroupKey, Detector]):
        self.kind = kind
        self.detectors: dict[GroupKey, Detector] = {tuple(k): d for k, d in detectors.items()}
        # Groups that could not be fitted, with the reason (too short, no data...).
        self.skipped: dict[GroupKey, str] = {}
        wrong = {k: d.kind for k, d in self.detectors.items() if d.kind != kind}
        if wrong:
            raise ValueError(f"DetectorSet({kind!r}) holds detectors of other kinds: {wrong}")

    def __len__(self) -> int:
        return len(self.detectors)

    def __contains__(self, key: GroupKey) -> bool:
        return tuple(key) in self.detectors

    @classmethod
    def fit_groups(
        cls,
        detector_cls: type[Detector] | Callable[[], Detector],
        config: DetectorConfig | None,
        frames: Mapping[GroupKey, pd.DataFrame],
        *,
        on_group: Callable[[GroupKey], None] | None = None,
    ) -> Self:
        """Fit one detector per group. A group that cannot be fitted is recorded in ``skipped``.

        ``detector_cls`` is a Detector class (built with ``config``) or a factory taking no
        arguments (``config`` must then be None).
        """
        detectors, skipped = {}, {}
        kind = None
        for key, frame in frames.items():
            detector = _build(detector_cls, config)
            kind = detector.kind
            try:
                detectors[tuple(key)] = detector.fit(frame)
            except ValueError as exc:
                skipped[tuple(key)] = str(exc)
            if on_group is not None:
                on_group(key)
        if kind is None:
            kind = _build(detector_cls, config).kind
        model_set = cls(kind, detectors)
        model_set.skipped = skipped
        return model_set

    def history_steps(self) -> int:
        """The most history any detector of the set wants before the points that matter."""
        return max((d.history_steps() for d in self.detectors.values()), default=0)

    def score(
        self, frames: Mapping[GroupKey, pd.DataFrame], *, n_jobs: int | None = None
    ) -> dict[GroupKey, pd.DataFrame]:
        """Calibrated scores per group; groups without a detector are left out.

        Groups are scored on ``n_jobs`` threads (default: up to 2): numpy, the forests' tree
        walks and most rolling windows release the GIL, and each group has its own detector.
        """
        return self._map("score", frames, n_jobs)

    def raw_scores(
        self, frames: Mapping[GroupKey, pd.DataFrame], *, n_jobs: int | None = None
    ) -> dict[GroupKey, pd.DataFrame]:
        return self._map("raw_scores", frames, n_jobs)

    def _map(self, method: str, frames: Mapping[GroupKey, pd.DataFrame], n_jobs: int | None):
        items = [(tuple(k), f) for k, f in frames.items() if tuple(k) in self.detectors]
        return dict(
            zip(
                (k for k, _ in items),
                map_threads(
                    lambda item: getattr(self.detectors[item[0]], method)(item[1]), items, n_jobs
                ),
                strict=True,
            )
        )

    def save(self, directory: Path | str) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        groups = []
        for number, (key, detector) in enumerate(sorted(self.detectors.items())):
            name = _dir_name(number, key)
            detector.save(directory / name)
            groups.append({"key": list(key), "dir": name})
        classes = {_class_path(type(d)) for d in self.detectors.values()}
        manifest: dict[str, Any] = {
            "kind": self.kind,
            "detector_class": classes.pop() if len(classes) == 1 else None,
            "groups": groups,
            "skipped": [{"key": list(k), "reason": r} for k, r in sorted(self.skipped.items())],
        }
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return directory

    @classmethod
    def load(cls, directory: Path | str, detector_cls: type[Detector] | None = None) -> Self:
        directory = Path(directory)
        manifest = json.loads((directory / MANIFEST).read_text())
        if detector_cls is None:
            if not manifest.get("detector_class"):
                raise ValueError(f"{directory}: manifest names no detector class; pass one")
            detector_cls = _resolve(manifest["detector_class"])
        if detector_cls.kind != manifest["kind"]:
            raise ValueError(
                f"{directory}: holds {manifest['kind']} detectors, not {detector_cls.kind}"
            )
        detectors = {
            tuple(group["key"]): detector_cls.load(directory / group["dir"])
            for group in manifest["groups"]
        }
        model_set = cls(manifest["kind"], detectors)
        model_set.skipped = {tuple(s["key"]): s["reason"] for s in manifest.get("skipped", [])}
        return model_set


def map_threads(function: Callable, items: list, n_jobs: int | None = None) -> list:
    """``[function(item) for item in items]`` on up to ``n_jobs`` threads, in order."""
    workers = min(len(items), n_jobs or min(2, os.cpu_count() or 1))
    if workers <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(function, items))


def _build(detector_cls: type[Detector] | Callable[[], Detector], config) -> Detector:
    if isinstance(detector_cls, type):
        return detector_cls(config)
    if config is not None:
        raise ValueError("pass either a detector class with a config, or a factory alone")
    return detector_cls()
