"""Logging a candidate: its own MLflow run, a new registered version, the ``challenger`` alias.

What a reviewer finds on the version: the description (what it is, the training window, data hash,
code version), tags (``detector.kind``, ``tenant``, ``data.*``, ``code.*``, the caller's own) and,
in the run, params, metrics, ``plots/*.png`` and the pyfunc model with its signature and input
example. Promotion adds its own tags and paragraphs later (:mod:`.promotion`).
"""

import contextlib
import functools
import logging
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from monitoring_pipelines.ml.catalogue import CATALOGUE
from monitoring_pipelines.ml.registry import tracking
from monitoring_pipelines.ml.registry.pyfunc import (
    LoadFn,
    import_path,
    pyfunc_class,
    pyfunc_frame,
    pyfunc_predict,
)
from monitoring_pipelines.ml.registry.tracking import DEFAULT_EXPERIMENT, Store
from monitoring_pipelines.ml.registry.versions import (
    CHALLENGER,
    CHAMPION,
    DETECTOR_ARTIFACT,
    LOADER_TAG,
    iso,
    registered_model,
    registered_model_name,
    scrub,
    scrub_dict,
)
from monitoring_pipelines.settings import redact_url

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow import MlflowClient
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo

logger = logging.getLogger(__name__)


class RegistrableModel(Protocol):
    """A fitted detector or set of detectors: ``DetectorSet`` and every ``Detector`` fit this.

    ``score`` takes one wide frame (a detector) or ``{group key: wide frame}`` (a set, logged with
    ``group_columns``); only the pyfunc wrapper calls it.
    """

    kind: str

    def save(self, directory: Path) -> Path: ...

    def score(self, frames: Any) -> Any: ...


@dataclass(frozen=True)
class CandidateInfo:
    run_id: str
    model_uri: str
    version: int
    registered_name: str


def log_candidate(
    registry: Store,
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
    ``load_by_alias`` find it again from the ``detector.loader`` tag.

    ``group_columns`` is for models that score several groups at once (a ``DetectorSet``, whose
    ``score`` takes ``{group key: wide frame}``): the pyfunc input then also has these columns
    (``("tenant", "service")``, say), rows are split by their values into one frame per group,
    and the output keeps them. Without them the model's ``score`` gets one wide frame.

    (Longer than our usual functions only by its keyword arguments and this text; the steps are
    the helpers below.)
    """
    import mlflow

    name = registered_model_name(kind, scope)
    _check_candidate(model, kind, data_hash)
    loader_ref = import_path(load_fn or type(model).load)
    window = (iso(data_window[0]), iso(data_window[1]))
    all_tags, text = _describe(
        kind, scope, window, data_hash, training_rows, loader_ref, tags, description
    )
    group_columns = tuple(group_columns)
    example_in, signature = _signature(model, input_example, output_example, group_columns)
    config = {"loader": loader_ref, "kind": kind, "group_columns": list(group_columns)}

    with registry.activate() as target:
        client = tracking.client(target)
        experiment_id = tracking.experiment_id(client, experiment, target)
        _ensure_registered_model(client, name, kind, scope)
        run_name = f"{kind}-{scope}-{window[1][:10]}"
        run_tags = {**all_tags, "mlflow.note.content": text}
        with _run(experiment_id, run_name, run_tags, params, plots) as run:
            model_info = _log_model(
                model,
                name=name,
                kind=kind,
                scope=scope,
                config=config,
                example_in=example_in,
                signature=signature,
            )
            # Linked to the logged model too, so the Models tab shows them next to it.
            mlflow.log_metrics(float_metrics(metrics), model_id=model_info.model_id)
            registered = mlflow.register_model(model_info.model_uri, name, tags=all_tags)
        version = int(registered.version)
        client.update_model_version(name, str(version), description=text)
        client.set_registered_model_alias(name, CHALLENGER, str(version))
    run_id = run.info.run_id
    uri = redact_url(target.uri)
    logger.info("logged %s version %d (run %s) to %s", name, version, run_id, uri)
    return CandidateInfo(
        run_id=run_id, model_uri=f"models:/{name}/{version}", version=version, registered_name=name
    )


def _check_candidate(model: RegistrableModel, kind: str, data_hash: str) -> None:
    """ValueError unless the model is of ``kind`` and its training data is identified."""
    if getattr(model, "kind", kind) != kind:
        raise ValueError(f"model is a {model.kind} detector, not {kind}")
    if not data_hash:
        raise ValueError("data_hash is required: it ties the version to its training data")


def _describe(
    kind: str,
    scope: str,
    window: tuple[str, str],
    data_hash: str,
    training_rows: int,
    loader_ref: str,
    tags: Mapping[str, Any] | None,
    description: str,
) -> tuple[dict[str, str], str]:
    """The version's tags (the caller's, then ours, which win) and its description."""
    code = code_version()
    ours = {
        "detector.kind": kind,
        "tenant": scope,
        "data.window_start": window[0],
        "data.window_end": window[1],
        "data.hash": data_hash,
        "data.training_rows": str(int(training_rows)),
        "code.version": code["version"],
        "code.git_sha": code["git_sha"],
        "code.git_dirty": code["git_dirty"],
        LOADER_TAG: loader_ref,
    }
    all_tags = scrub_dict({**{str(k): v for k, v in (tags or {}).items()}, **ours})
    dirty = ", uncommitted changes" if code["git_dirty"] == "true" else ""
    text = (
        f"`{kind}` detector for tenant `{scope}`, trained on {window[0]} to {window[1]} "
        f"({int(training_rows)} rows, data hash `{data_hash}`) with code {code['version']} "
        f"(git {code['git_sha'][:12]}{dirty})."
    )
    if description.strip():
        text = f"{text}\n\n{description.strip()}"
    return all_tags, scrub(text)


def _signature(
    model: RegistrableModel,
    input_example: pd.DataFrame,
    output_example: pd.DataFrame | None,
    group_columns: tuple[str, ...],
) -> tuple[pd.DataFrame, "ModelSignature"]:
    """The pyfunc input example and the signature inferred from it and the model's output."""
    from mlflow.models import infer_signature

    example_in = pyfunc_frame(input_example, group_columns)
    if output_example is None:
        example_out = pyfunc_predict(model, example_in, group_columns)
    else:
        example_out = pyfunc_frame(output_example, group_columns)
    return example_in, infer_signature(example_in, example_out)


@contextlib.contextmanager
def _run(
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any],
    plots: Mapping[str, "Figure"] | None,
) -> Iterator[Any]:
    """The candidate's run, open, with its tags, params and plots already logged."""
    import mlflow

    # Nested when the caller already has a run open (a Dagster MLflow resource, say).
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, nested=mlflow.active_run() is not None
    ) as run:
        mlflow.set_tags(dict(tags))
        mlflow.log_params(flat_params(params))
        for plot_name, figure in (plots or {}).items():
            file_name = plot_name if plot_name.endswith(".png") else f"{plot_name}.png"
            mlflow.log_figure(figure, f"plots/{file_name}")
        yield run


def _log_model(
    model: RegistrableModel,
    *,
    name: str,
    kind: str,
    scope: str,
    config: dict[str, Any],
    example_in: pd.DataFrame,
    signature: "ModelSignature",
) -> "ModelInfo":
    """The detector's own save directory, logged as the artifact of a pyfunc model."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="detector-") as tmp:
        detector_dir = Path(model.save(Path(tmp) / DETECTOR_ARTIFACT))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=pyfunc_class()(),
            artifacts={DETECTOR_ARTIFACT: str(detector_dir)},
            # What the pyfunc wrapper reads back in load_context.
            model_config=config,
            signature=signature,
            input_example=example_in,
            pip_requirements=pip_requirements(kind),
            tags={"detector.kind": kind, "tenant": scope},
        )


def _ensure_registered_model(client: "MlflowClient", name: str, kind: str, scope: str) -> None:
    from mlflow.exceptions import MlflowException

    if registered_model(client, name) is not None:
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
        if registered_model(client, name) is None:
            raise


# -- what goes into the run ------------------------------------------------------------------------


@functools.cache
def code_version() -> dict[str, str]:
    """The package version and the git commit (and whether it had uncommitted changes)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package_version = version("monitoring-pipelines")
    except PackageNotFoundError:
        package_version = "unknown"
    package = Path(__file__).resolve().parents[2]
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


def pip_requirements(kind: str) -> list[str]:
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


def flat_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as ``a.b`` keys, values scrubbed and cut to MLflow's 6000 characters."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = scrub(str(value))[:6000]
    return out


def float_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metric {key!r} is not a number: {value!r}") from exc
    return out
