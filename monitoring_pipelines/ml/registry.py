"""MLflow tracking and registry for detectors: log candidates, promote champions, roll back.

Naming: one registered model per detector kind and scope (the tenant), called
``anomaly-<kind>-<scope>``, e.g. ``anomaly-isolation_forest-acme`` (:func:`registered_model_name`).

Aliases, never stages (deprecated in MLflow):

- ``challenger``: the newest candidate logged by :func:`log_candidate`; it stays on a candidate that
  was not promoted so a reviewer can find it, and leaves a candidate that became champion.
- ``champion``: the version the pipeline scores with. It only moves through
  :func:`promote_if_not_worse` (a candidate that is not worse on the same held-out data) or
  :func:`rollback`. The champions so far are kept, oldest first, as JSON in the registered model's
  ``champion.history`` tag so a rollback knows where to go back to.

What a reviewer finds on a version: the description (what it is, the training window, data hash,
code version, then one paragraph per promotion check or rollback), tags (``detector.kind``,
``tenant``, ``data.*``, ``code.*``, ``validation.*``, ``promotion.*``, ``rollback.*``) and, in the
run, params, metrics, ``plots/*.png`` and the model with its signature and input example.

The logged model is an ``mlflow.pyfunc`` model (:class:`DetectorPyfunc`) wrapping the directory the
detector's own ``save()`` wrote (each component in its native MLflow flavor). The pipeline does not
go through pyfunc: :func:`load_by_alias` downloads that directory and rebuilds the real detector
with its loader, so it keeps the detector's full interface. Other consumers of the pyfunc turn a
wide frame into its input with :func:`pyfunc_frame`.

mlflow is imported inside functions: importing this module must stay cheap for the code location.
"""

import contextlib
import functools
import hashlib
import importlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.catalogue import CATALOGUE, KINDS
from monitoring_pipelines.settings import load_settings, redact_url

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_EXPERIMENT = "anomaly-detectors"
DEFAULT_GUARDS: Mapping[str, str] = MappingProxyType(
    {"false_alarms_per_series_week": "lower", "detection_delay_median_minutes": "lower"}
)
HISTORY_TAG = "champion.history"
LOADER_TAG = "detector.loader"
DETECTOR_ARTIFACT = "detector"
TS_COLUMN = "ts"

_NAME_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@\s/]*@")
# Backends where MLflow runs in-process with no server: without an explicit artifact location it
# writes artifacts to ./mlruns under whatever the current directory is.
_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_HISTORY_KEEP = 100
_CACHE_SIZE = 16


# -- the detector, as far as the registry cares ----------------------------------------------------


class RegistrableModel(Protocol):
    """A fitted detector or set of detectors: ``DetectorSet`` and every ``Detector`` fit this.

    ``score`` takes one wide frame (a detector) or ``{group key: wide frame}`` (a set, logged with
    ``group_columns``); only the pyfunc wrapper calls it.
    """

    kind: str

    def save(self, directory: Path) -> Path: ...

    def score(self, frames: Any) -> Any: ...


LoadFn = Callable[[Path], Any]


class ModelNotFound(LookupError):
    """No registered model, version or alias by that name; the message is one line for the CLI."""


@dataclass(frozen=True)
class CandidateInfo:
    run_id: str
    model_uri: str
    version: int
    registered_name: str


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: int
    run_id: str | None
    aliases: tuple[str, ...]
    tags: dict[str, str]
    description: str

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reasons: list[str]
    compared: dict[str, dict[str, Any]]
    version: int | None = None
    previous_champion: int | None = None


# -- tracking target -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackingTarget:
    uri: str
    artifact_root: Path | None
    home: Path

    @property
    def cache_dir(self) -> Path:
        """Downloaded model versions, kept beside the artifacts (versions never change)."""
        base = self.artifact_root.parent if self.artifact_root is not None else self.home
        return base / "model-cache"


_targets: list[TrackingTarget] = []
_lock = threading.RLock()


@contextlib.contextmanager
def tracking(uri: str | None = None, artifact_root: Path | None = None) -> Iterator[TrackingTarget]:
    """Point MLflow (tracking and registry) at ``uri`` for the duration of the block.

    Defaults come from settings: ``MLFLOW_TRACKING_URI`` (SQLite under ``MONITORING_HOME``) and,
    for a database backend, ``$MONITORING_HOME/mlartifacts`` for artifacts. Experiments this module
    creates get their artifact location under ``artifact_root`` so that nothing lands in
    ``./mlruns``; a tracking server (http/https) keeps its own artifact store. The previous MLflow
    URIs are restored on exit. Functions here open a default block themselves when none is active.
    MLflow's URIs are process-wide, so use one target at a time per process (threads included).
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    settings = load_settings()
    uri = uri or settings.mlflow_tracking_uri
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if artifact_root is None and scheme in _DB_SCHEMES:
        artifact_root = settings.home / "mlartifacts"
    if artifact_root is not None:
        artifact_root = Path(artifact_root).expanduser().resolve()
        artifact_root.mkdir(parents=True, exist_ok=True)
    if scheme == "sqlite":
        _sqlite_parent(uri).mkdir(parents=True, exist_ok=True)
    target = TrackingTarget(uri=uri, artifact_root=artifact_root, home=settings.home)

    previous_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    # MLflow keeps the URIs as module globals; restoring them by value is what its own
    # _use_tracking_uri does, so nested blocks and tests on several backends do not leak.
    previous = (
        getattr(tracking_utils, "_tracking_uri", None),
        getattr(registry_utils, "_registry_uri", None),
    )
    with _lock:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        _targets.append(target)
    try:
        yield target
    finally:
        with _lock:
            _targets.remove(target)
            mlflow.set_tracking_uri(previous[0])
            mlflow.set_registry_uri(previous[1])
            for key, value in previous_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@contextlib.contextmanager
def _session() -> Iterator[TrackingTarget]:
    if _targets:
        yield _targets[-1]
    else:
        with tracking() as target:
            yield target


def _client(target: TrackingTarget) -> "MlflowClient":
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=target.uri, registry_uri=target.uri)


def _sqlite_parent(uri: str) -> Path:
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    return Path(database).expanduser().resolve().parent if database else Path.cwd()


# -- naming ----------------------------------------------------------------------------------------


def registered_model_name(kind: str, scope: str) -> str:
    """``anomaly-<kind>-<scope>``: one registered model per detector kind and tenant.

    ``kind`` is the detector's ``kind`` (``isolation_forest``, ``lstm``, ``prophet``, ``zscore``)
    and ``scope`` the tenant. Both must be plain identifiers (letters, digits, ``_``, ``.``, ``-``)
    so the name reads well in the UI and in ``models:/`` URIs.
    """
    for label, value in (("kind", kind), ("scope", scope)):
        if not isinstance(value, str) or not _NAME_PART.match(value):
            raise ValueError(f"detector {label} {value!r} must be letters, digits, '_', '.' or '-'")
    return f"anomaly-{kind}-{scope}"


# -- logging a candidate ---------------------------------------------------------------------------


def log_candidate(
    model: RegistrableModel,
    *,
    kind: str,
    scope: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    data_window: tuple[Any, Any],
    data_hash: str,
    training_rows: int,
    plots: Mapping[str, "Figure"] | None = None,
    input_example: pd.DataFrame,
    output_example: pd.DataFrame | None = None,
    description: str = "",
    tags: Mapping[str, Any] | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    load_fn: LoadFn | None = None,
    group_columns: Sequence[str] = (),
) -> CandidateInfo:
    """Log one fitted candidate as its own run, register it, and give it the ``challenger`` alias.

    ``input_example`` is a few rows of what the model scores: a wide frame with a UTC
    ``DatetimeIndex`` or a ``ts`` column, one column per metric. ``output_example`` defaults to the
    model's scores for it. ``load_fn`` rebuilds the model from the directory ``model.save()`` wrote
    (default ``type(model).load``); it must be importable by name, because the pyfunc wrapper and
    :func:`load_by_alias` find it again from the ``detector.loader`` tag.

    ``group_columns`` is for models that score several groups at once (a ``DetectorSet``, whose
    ``score`` takes ``{group key: wide frame}``): the pyfunc input then also has these columns
    (``("tenant", "service")``, say), rows are split by their values into one frame per group,
    and the output keeps them. Without them the model's ``score`` gets one wide frame.
    """
    import mlflow
    from mlflow.models import infer_signature

    name = registered_model_name(kind, scope)
    if getattr(model, "kind", kind) != kind:
        raise ValueError(f"model is a {model.kind} detector, not {kind}")
    if not data_hash:
        raise ValueError("data_hash is required: it ties the version to its training data")
    loader_ref = _import_path(load_fn or type(model).load)
    start, end = (_iso(value) for value in data_window)
    code = _code_version()

    group_columns = tuple(group_columns)
    example_in = pyfunc_frame(input_example, group_columns)
    if output_example is None:
        example_out = _pyfunc_predict(model, example_in, group_columns)
    else:
        example_out = pyfunc_frame(output_example, group_columns)
    signature = infer_signature(example_in, example_out)

    base_tags = {
        "detector.kind": kind,
        "tenant": scope,
        "data.window_start": start,
        "data.window_end": end,
        "data.hash": data_hash,
        "data.training_rows": str(int(training_rows)),
        "code.version": code["version"],
        "code.git_sha": code["git_sha"],
        "code.git_dirty": code["git_dirty"],
        LOADER_TAG: loader_ref,
    }
    all_tags = _scrub_dict({**{str(k): v for k, v in (tags or {}).items()}, **base_tags})
    dirty = ", uncommitted changes" if code["git_dirty"] == "true" else ""
    version_text = (
        f"`{kind}` detector for tenant `{scope}`, trained on {start} to {end} "
        f"({int(training_rows)} rows, data hash `{data_hash}`) with code {code['version']} "
        f"(git {code['git_sha'][:12]}{dirty})."
    )
    if description.strip():
        version_text = f"{version_text}\n\n{description.strip()}"
    version_text = _scrub(version_text)

    with _session() as target:
        client = _client(target)
        experiment_id = _experiment_id(client, experiment, target)
        _ensure_registered_model(client, name, kind, scope)
        run_name = f"{kind}-{scope}-{end[:10]}"
        with (
            tempfile.TemporaryDirectory(prefix="detector-") as tmp,
            # Nested when the caller already has a run open (a Dagster MLflow resource, say).
            mlflow.start_run(
                experiment_id=experiment_id,
                run_name=run_name,
                nested=mlflow.active_run() is not None,
            ) as run,
        ):
            mlflow.set_tags({**all_tags, "mlflow.note.content": version_text})
            mlflow.log_params(_flat_params(params))
            for plot_name, figure in (plots or {}).items():
                file_name = plot_name if plot_name.endswith(".png") else f"{plot_name}.png"
                mlflow.log_figure(figure, f"plots/{file_name}")
            detector_dir = Path(model.save(Path(tmp) / DETECTOR_ARTIFACT))
            model_info = mlflow.pyfunc.log_model(
                name=name,
                python_model=_pyfunc_class()(),
                artifacts={DETECTOR_ARTIFACT: str(detector_dir)},
                model_config={
                    "loader": loader_ref,
                    "kind": kind,
                    "group_columns": list(group_columns),
                },
                signature=signature,
                input_example=example_in,
                pip_requirements=_pip_requirements(kind),
                tags={"detector.kind": kind, "tenant": scope},
            )
            # Linked to the logged model too, so the Models tab shows them next to it.
            mlflow.log_metrics(_float_metrics(metrics), model_id=model_info.model_id)
            registered = mlflow.register_model(model_info.model_uri, name, tags=all_tags)
        version = int(registered.version)
        client.update_model_version(name, str(version), description=version_text)
        client.set_registered_model_alias(name, CHALLENGER, str(version))
    logger.info(
        "logged %s version %d (run %s) to %s",
        name,
        version,
        run.info.run_id,
        redact_url(target.uri),
    )
    return CandidateInfo(
        run_id=run.info.run_id,
        model_uri=f"models:/{name}/{version}",
        version=version,
        registered_name=name,
    )


def _experiment_id(client: "MlflowClient", name: str, target: TrackingTarget) -> str:
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


def _ensure_registered_model(client: "MlflowClient", name: str, kind: str, scope: str) -> None:
    from mlflow.exceptions import MlflowException

    if _registered_model(client, name) is not None:
        return
    text = (
        f"Anomaly detector `{kind}` for tenant `{scope}`.\n\n"
        f"Alias `{CHAMPION}` is the version the pipeline scores with; it moves only when a "
        f"candidate is not worse than the champion on the same held-out data, or on rollback. "
        f"Alias `{CHALLENGER}` is the newest candidate. Each version's tags and description "
        f"give its training window, data hash, validation metrics and promotion decision."
    )
    try:
        client.create_registered_model(
            name,
            tags={"detector.kind": kind, "tenant": scope, "managed_by": "monitoring_pipelines"},
            description=text,
        )
    except MlflowException:
        if _registered_model(client, name) is None:
            raise


def _registered_model(client: "MlflowClient", name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


# -- the pyfunc wrapper ----------------------------------------------------------------------------


def __getattr__(name: str) -> Any:
    # DetectorPyfunc subclasses mlflow's PythonModel, so it is built on first use. Exposing it as a
    # module attribute lets cloudpickle store it by reference (a few bytes naming this module)
    # instead of by value, and lets unpickling find it again.
    if name == "DetectorPyfunc":
        return _pyfunc_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _pyfunc_class() -> type:
    import mlflow

    class DetectorPyfunc(mlflow.pyfunc.PythonModel):
        """Scores a frame with the detector saved in the model's ``detector`` artifact.

        Input: a ``ts`` column (UTC, timezone-naive as MLflow's schema requires), the group columns
        if the model was logged with some, and one column per metric. Output: the same rows in the
        same order, each metric column replaced by its calibrated score in [0, 1].
        """

        def load_context(self, context) -> None:
            config = context.model_config
            self.group_columns = tuple(config.get("group_columns") or ())
            self.detector = _resolve(config["loader"])(Path(context.artifacts[DETECTOR_ARTIFACT]))

        def predict(
            self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> pd.DataFrame:
            return _pyfunc_predict(self.detector, model_input, self.group_columns)

    DetectorPyfunc.__module__ = __name__
    DetectorPyfunc.__qualname__ = "DetectorPyfunc"
    return DetectorPyfunc


def pyfunc_frame(frame: pd.DataFrame, group_columns: Sequence[str] = ()) -> pd.DataFrame:
    """A wide frame (UTC index or ``ts`` column) in the shape the pyfunc model takes and returns.

    ``ts`` becomes timezone-naive UTC (MLflow's schema refuses aware timestamps), group columns
    text, metric columns floats.
    """
    if TS_COLUMN in frame.columns:
        ts = pd.to_datetime(frame[TS_COLUMN], utc=True)
        rest = frame.drop(columns=[TS_COLUMN])
    elif isinstance(frame.index, pd.DatetimeIndex):
        ts = pd.Series(frame.index, index=frame.index)
        ts = ts.dt.tz_localize("UTC") if frame.index.tz is None else ts.dt.tz_convert("UTC")
        rest = frame
    else:
        raise ValueError(f"frame needs a '{TS_COLUMN}' column or a DatetimeIndex")
    missing = [c for c in group_columns if c not in rest.columns]
    if missing:
        raise ValueError(f"frame lacks the group columns {missing}")
    rest = rest.reset_index(drop=True)
    metrics = [c for c in rest.columns if c not in group_columns]
    out = pd.DataFrame({TS_COLUMN: ts.dt.tz_localize(None).astype("datetime64[ns]").to_numpy()})
    for column in group_columns:
        out[column] = rest[column].astype(str).to_numpy()
    for column in metrics:
        out[str(column)] = rest[column].astype("float64").to_numpy()
    return out


def _wide(rows: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Rows with a ``ts`` column (naive means UTC) -> the detectors' wide frame."""
    wide = rows[list(metrics)].astype("float64")
    wide.index = pd.DatetimeIndex(pd.to_datetime(rows[TS_COLUMN], utc=True), name=None)
    return wide


def _pyfunc_predict(
    model: Any, frame: pd.DataFrame, group_columns: Sequence[str] = ()
) -> pd.DataFrame:
    """Score pyfunc-shaped rows with ``model`` and return them with scores in the metric columns."""
    if TS_COLUMN not in frame.columns:
        raise ValueError(f"input needs a '{TS_COLUMN}' column of UTC timestamps")
    frame = pyfunc_frame(frame, group_columns)
    metrics = [c for c in frame.columns if c != TS_COLUMN and c not in group_columns]
    if not group_columns:
        scores = model.score(_wide(frame, metrics))
        out = frame.copy()
        out[metrics] = scores.reindex(columns=metrics).to_numpy()
        return out
    positions = frame.groupby(list(group_columns), sort=False).indices
    groups = {
        tuple(str(k) for k in (key if isinstance(key, tuple) else (key,))): rows
        for key, rows in positions.items()
    }
    scores = model.score({key: _wide(frame.iloc[rows], metrics) for key, rows in groups.items()})
    out = frame.copy()
    # Groups the model has no detector for keep NaN scores rather than failing the batch.
    out[metrics] = np.nan
    for key, group_scores in scores.items():
        rows = groups[tuple(key)]
        out.iloc[rows, out.columns.get_indexer(metrics)] = group_scores.reindex(
            columns=metrics
        ).to_numpy()
    return out


# -- loading by alias ------------------------------------------------------------------------------

_loaded: OrderedDict[tuple[str, str, int, str, str], Any] = OrderedDict()


def load_by_alias(
    kind: str, scope: str, alias: str = CHAMPION, *, load_fn: LoadFn | None = None
) -> tuple[Any, VersionInfo]:
    """The real detector behind ``models:/anomaly-<kind>-<scope>@<alias>``, and its version.

    The alias is resolved on every call (cheap), the detector is downloaded and loaded once per
    process and version: versions never change, so a moved alias is picked up while repeated
    calls in a run reuse the object. ``load_fn`` defaults to the loader recorded when the version
    was logged. Raises :class:`ModelNotFound` when there is no such model or alias.
    """
    name = registered_model_name(kind, scope)
    with _session() as target:
        client = _client(target)
        version = _alias_version(client, name, alias)
        if version is None:
            raise ModelNotFound(f"{name} has no version with alias {alias!r}")
        info = _version_info(client, name, version)
        loader_ref = _loader_key(load_fn) if load_fn else info.tags.get(LOADER_TAG)
        if not loader_ref:
            raise ModelNotFound(f"{name} v{version} has no {LOADER_TAG} tag; pass load_fn")
        key = (target.uri, name, version, info.run_id or "", loader_ref)
        with _lock:
            if key in _loaded:
                _loaded.move_to_end(key)
                return _loaded[key], info
        directory = _download(target, info)
        detector = (load_fn or _resolve(loader_ref))(directory)
        with _lock:
            _loaded[key] = detector
            while len(_loaded) > _CACHE_SIZE:
                _loaded.popitem(last=False)
    return detector, info


def champion_versions(scope: str, kinds: tuple[str, ...] = KINDS) -> dict[str, int]:
    """``{kind: champion version}`` for the kinds of ``scope`` that have a champion."""
    out = {}
    with _session() as target:
        client = _client(target)
        for kind in kinds:
            version = _alias_version(client, registered_model_name(kind, scope), CHAMPION)
            if version is not None:
                out[kind] = version
    return out


def clear_cache() -> None:
    """Forget loaded detectors (files downloaded under the cache folder stay)."""
    with _lock:
        _loaded.clear()


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


def _alias_version(client: "MlflowClient", name: str, alias: str) -> int | None:
    model = _registered_model(client, name)
    if model is None or alias not in (model.aliases or {}):
        return None
    return int(model.aliases[alias])


def _version_info(client: "MlflowClient", name: str, version: int) -> VersionInfo:
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise ModelNotFound(f"{name} has no version {version}") from exc
    return VersionInfo(
        name=name,
        version=int(mv.version),
        run_id=mv.run_id,
        aliases=tuple(mv.aliases or ()),
        tags=dict(mv.tags or {}),
        description=mv.description or "",
    )


# -- promotion and rollback ------------------------------------------------------------------------


def promote_if_not_worse(
    kind: str,
    scope: str,
    candidate_version: int,
    candidate_metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None,
    *,
    primary: str = "event_f1",
    guards: Mapping[str, str] = DEFAULT_GUARDS,
    tolerance: float = 0.0,
    validation_window: tuple[Any, Any] | None = None,
    baseline_metrics: Mapping[str, float] | None = None,
) -> Decision:
    """Move ``champion`` to the candidate unless it is worse than the current champion.

    Contract: ``candidate_metrics`` and ``champion_metrics`` were computed by the caller on the SAME
    held-out data (same series, same window, same labels); numbers from different windows are not
    comparable and this function cannot tell. Pass that window as ``validation_window`` so the
    reviewer sees it.

    Rule: ``primary`` (higher is better) and every guard (``{metric: "lower" | "higher"}``) must be
    at least as good as the champion's, within ``tolerance`` (a fraction of the champion's value,
    applied to every metric since they have different units). NaN counts as the worst value. With
    no champion yet the candidate becomes champion if its ``primary`` is not worse than the
    reference baseline's (``baseline_metrics``, measured on the same data; without them it becomes
    champion as it is); with a champion but no ``champion_metrics`` nothing is compared and nothing
    moves. The decision, its reasons and the metrics are written
    on the candidate version; a replaced champion is tagged with the version that replaced it.
    """
    name = registered_model_name(kind, scope)
    candidate_version = int(candidate_version)
    now = _now()
    with _session() as target:
        client = _client(target)
        _version_info(client, name, candidate_version)
        champion = _alias_version(client, name, CHAMPION)
        compared: dict[str, dict[str, Any]] = {}
        if champion == candidate_version:
            return Decision(True, [f"v{champion} is already champion"], {}, champion, champion)
        if champion is None:
            promoted, reasons = _first_candidate(
                candidate_metrics, baseline_metrics, primary, tolerance, compared
            )
        elif champion_metrics is None:
            promoted = False
            reasons = [f"champion v{champion} has no metrics on the same held-out data"]
        else:
            directions = {primary: "higher", **dict(guards)}
            failed, passed = [], []
            for metric, direction in directions.items():
                if direction not in ("higher", "lower"):
                    raise ValueError(f"guard {metric}: direction must be 'higher' or 'lower'")
                row = _compare(metric, direction, candidate_metrics, champion_metrics, tolerance)
                compared[metric] = row
                (passed if row["ok"] else failed).append(row["reason"])
            promoted = not failed
            reasons = passed if promoted else failed

        if promoted:
            client.set_registered_model_alias(name, CHAMPION, str(candidate_version))
            if _alias_version(client, name, CHALLENGER) == candidate_version:
                client.delete_registered_model_alias(name, CHALLENGER)
            _push_history(client, name, champion, candidate_version)
            if champion is not None:
                _set_version_tags(
                    client,
                    name,
                    champion,
                    {"promotion.replaced_by": str(candidate_version), "promotion.replaced_at": now},
                )

        tags = {
            "promotion.decision": "promoted" if promoted else "rejected",
            "promotion.reasons": "; ".join(reasons),
            "promotion.compared_with_version": "none" if champion is None else str(champion),
            "promotion.decided_at": now,
            "promotion.rule": _rule_text(primary, guards, tolerance),
        }
        if compared:
            tags["promotion.compared"] = json.dumps(compared, default=_json_number)
        tags.update({f"validation.{k}": _fmt(v) for k, v in candidate_metrics.items()})
        if validation_window is not None:
            tags["validation.window_start"] = _iso(validation_window[0])
            tags["validation.window_end"] = _iso(validation_window[1])
        _set_version_tags(client, name, candidate_version, tags)
        heading = f"**Promotion check {now}** against "
        heading += "no champion" if champion is None else f"champion v{champion}"
        if validation_window is not None:
            heading += (
                f" on held-out data {tags['validation.window_start']} to "
                f"{tags['validation.window_end']}"
            )
        heading += ": PROMOTED to champion." if promoted else ": not promoted."
        paragraph = "\n".join([heading, *(f"- {reason}" for reason in reasons)])
        _append_description(client, name, candidate_version, paragraph)
    logger.info("%s v%d: %s (%s)", name, candidate_version, tags["promotion.decision"], reasons)
    return Decision(promoted, reasons, compared, candidate_version, champion)


def rollback(
    kind: str, scope: str, to_version: int | None = None, *, reason: str = "manual rollback"
) -> tuple[int, int]:
    """Put an earlier version back as ``champion``; returns ``(from_version, to_version)``.

    By default the version that was champion before the current one (from the registered model's
    ``champion.history``). The current champion leaves the history, so rolling back twice goes two
    steps back rather than flipping between two versions. Both versions get ``rollback.*`` tags and
    the restored one a description paragraph with the reason.
    """
    name = registered_model_name(kind, scope)
    now = _now()
    with _session() as target:
        client = _client(target)
        current = _alias_version(client, name, CHAMPION)
        if current is None:
            raise ModelNotFound(f"{name} has no champion to roll back")
        history = _history(client, name)
        if not history or history[-1] != current:
            # The alias was moved by hand (UI, API): the alias is the truth.
            history.append(current)
        remaining = history[:-1]
        if to_version is None:
            to_version = next(
                (v for v in reversed(remaining) if v != current and _exists(client, name, v)), None
            )
            if to_version is None:
                raise ModelNotFound(f"{name} has no earlier champion than v{current}")
        to_version = int(to_version)
        if to_version == current:
            raise ValueError(f"{name} v{to_version} is already champion")
        _version_info(client, name, to_version)
        if to_version in remaining:
            cut = len(remaining) - remaining[::-1].index(to_version)
            remaining = remaining[:cut]
        else:
            remaining.append(to_version)

        client.set_registered_model_alias(name, CHAMPION, str(to_version))
        _write_history(client, name, remaining)
        reason = _scrub(reason)
        _set_version_tags(
            client,
            name,
            current,
            {
                "rollback.rolled_back_at": now,
                "rollback.replaced_by": str(to_version),
                "rollback.reason": reason,
            },
        )
        _set_version_tags(
            client,
            name,
            to_version,
            {
                "rollback.restored_at": now,
                "rollback.restored_from": str(current),
                "rollback.reason": reason,
            },
        )
        restored = f"**Rollback {now}**: champion again in place of v{current}. Reason: {reason}"
        replaced = (
            f"**Rollback {now}**: no longer champion, v{to_version} restored. Reason: {reason}"
        )
        _append_description(client, name, to_version, restored)
        _append_description(client, name, current, replaced)
    logger.warning(
        "%s: champion rolled back from v%d to v%d (%s)", name, current, to_version, reason
    )
    return current, to_version


def _first_candidate(
    candidate: Mapping[str, float],
    baseline: Mapping[str, float] | None,
    primary: str,
    tolerance: float,
    compared: dict[str, dict[str, Any]],
) -> tuple[bool, list[str]]:
    """Whether a first candidate (no champion yet) becomes champion, and why."""
    if baseline is None:
        return True, ["no champion yet: the first candidate becomes champion"]
    row = _compare(primary, "higher", candidate, baseline, tolerance, against="reference baseline")
    compared[f"baseline.{primary}"] = row
    if row["ok"]:
        return True, [f"no champion yet, and {row['reason']}: the candidate becomes champion"]
    return False, [
        f"no champion yet, and {row['reason']}: not promoted; the pipeline scores with the kinds "
        "that qualified"
    ]


def _compare(
    metric: str,
    direction: str,
    candidate: Mapping[str, float],
    champion: Mapping[str, float],
    tolerance: float,
    *,
    against: str = "champion",
) -> dict[str, Any]:
    if metric not in candidate or metric not in champion:
        missing = "candidate" if metric not in candidate else "champion"
        return {
            "direction": direction,
            "candidate": candidate.get(metric),
            "champion": champion.get(metric),
            "ok": False,
            "reason": f"{metric}: missing from the {against if missing == 'champion' else missing}"
            "'s metrics",
        }
    cand, champ = float(candidate[metric]), float(champion[metric])
    worst = -np.inf if direction == "higher" else np.inf
    c = worst if np.isnan(cand) else cand
    h = worst if np.isnan(champ) else champ
    slack = tolerance * abs(h) if np.isfinite(h) else 0.0
    ok = bool(c == h or (c >= h - slack if direction == "higher" else c <= h + slack))
    relation = "not worse than" if ok else "worse than"
    better = f"{'higher' if direction == 'higher' else 'lower'} is better"
    return {
        "direction": direction,
        "candidate": cand,
        "champion": champ,
        "ok": ok,
        "reason": f"{metric} {_fmt(cand)} {relation} {against}'s {_fmt(champ)} ({better})",
    }


def _rule_text(primary: str, guards: Mapping[str, str], tolerance: float) -> str:
    rule = [f"{primary} (higher)", *(f"{m} ({d})" for m, d in guards.items())]
    return f"not worse on {', '.join(rule)}; tolerance {tolerance:g} of the champion's value"


def _history(client: "MlflowClient", name: str) -> list[int]:
    model = _registered_model(client, name)
    raw = (model.tags or {}).get(HISTORY_TAG) if model is not None else None
    try:
        return [int(v) for v in json.loads(raw)] if raw else []
    except (ValueError, TypeError):
        logger.warning("%s: unreadable %s tag %r, starting a new history", name, HISTORY_TAG, raw)
        return []


def _push_history(client: "MlflowClient", name: str, previous: int | None, new: int) -> None:
    history = _history(client, name)
    if previous is not None and (not history or history[-1] != previous):
        history.append(previous)
    history.append(new)
    _write_history(client, name, history)


def _write_history(client: "MlflowClient", name: str, history: list[int]) -> None:
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-_HISTORY_KEEP:]))


def _exists(client: "MlflowClient", name: str, version: int) -> bool:
    try:
        _version_info(client, name, version)
    except ModelNotFound:
        return False
    return True


def _set_version_tags(client: "MlflowClient", name: str, version: int, tags: dict) -> None:
    for key, value in _scrub_dict(tags).items():
        client.set_model_version_tag(name, str(version), key, value)


def _append_description(client: "MlflowClient", name: str, version: int, paragraph: str) -> None:
    current = client.get_model_version(name, str(version)).description or ""
    text = f"{current.rstrip()}\n\n{_scrub(paragraph)}" if current.strip() else _scrub(paragraph)
    client.update_model_version(name, str(version), description=text)


# -- small helpers ---------------------------------------------------------------------------------


def _import_path(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of an importable function, class or classmethod."""
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type):
        ref = f"{owner.__module__}:{owner.__qualname__}.{fn.__name__}"
    else:
        ref = f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}"
    if "<" in ref or ref.startswith(":") or ref.endswith(":"):
        raise ValueError(f"loader {fn!r} must be importable by name (module-level)")
    return ref


def _loader_key(fn: Callable[..., Any]) -> str:
    try:
        return _import_path(fn)
    except ValueError:
        return repr(fn)


def _resolve(ref: str) -> Callable[[Path], Any]:
    module_name, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@functools.cache
def _code_version() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        package_version = version("monitoring-pipelines")
    except PackageNotFoundError:
        package_version = "unknown"
    package = Path(__file__).resolve().parents[1]
    sha, dirty = "unknown", "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        sha = out.stdout.strip() or "unknown"
        # Limited to the package, untracked files included: a new module not yet committed means
        # the sha alone does not describe the code that trained the model.
        status = subprocess.run(
            ["git", "-C", str(package), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        dirty = "true" if status.stdout.strip() else "false"
    return {"version": package_version, "git_sha": sha, "git_dirty": dirty}


def _pip_requirements(kind: str) -> list[str]:
    """Pinned to what is installed; cheaper than MLflow's inference, which loads the model in a
    subprocess. The serving environment also needs this package (it defines the loaders)."""
    from importlib.metadata import PackageNotFoundError, version

    requirements = []
    for package in ("mlflow", "pandas", "numpy", "scipy", *_own_packages(kind)):
        with contextlib.suppress(PackageNotFoundError):
            requirements.append(f"{package}=={version(package)}")
    return requirements


def _own_packages(kind: str) -> tuple[str, ...]:
    """A kind's own packages (none for a kind the catalogue does not know, e.g. in tests)."""
    row = CATALOGUE.get(kind)
    return row.pip_requirements if row else ()


def _flat_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat_params(value, f"{name}."))
        else:
            out[name] = _scrub(str(value))[:6000]
    return out


def _float_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metric {key!r} is not a number: {value!r}") from exc
    return out


def _scrub(text: str) -> str:
    """Mask the password of any URL in ``text`` (``user:***@``), as redact_url does."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)


def _scrub_dict(values: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): _scrub(str(v)) for k, v in values.items()}


def _iso(value: Any) -> str:
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.isoformat().replace("+00:00", "Z")


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _fmt(value: Any) -> str:
    try:
        return f"{float(value):.6g}"
    except (TypeError, ValueError):
        return str(value)


def _json_number(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "experiment"
