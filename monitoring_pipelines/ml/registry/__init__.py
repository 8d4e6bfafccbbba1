"""MLflow tracking and registry for detectors: log candidates, promote champions, roll back, load.

Get a :class:`ModelRegistry` for a store and call its operations::

    models = mlflow_resource.registry()  # in an asset; elsewhere ModelRegistry(uri, artifact_root)
    info = models.log_candidate(detector_set, kind="zscore", scope="acme", ...)
    decision = models.promote_if_not_worse("zscore", "acme", info.version, metrics, champions)
    detector, version = models.load_by_alias("zscore", "acme")  # the champion
    models.rollback("zscore", "acme", reason="alert storm")

Naming: one registered model per detector kind and scope (the tenant), called
``anomaly-<kind>-<scope>``, e.g. ``anomaly-isolation_forest-acme`` (:func:`registered_model_name`).

Aliases, never stages (deprecated in MLflow):

- ``challenger``: the newest candidate logged by ``log_candidate``; it stays on a candidate that
  was not promoted so a reviewer can find it, and leaves a candidate that became champion. Once a
  tenant has a champion, a retrained candidate stays challenger (``register_challenger``): it is
  scored in shadow on live days and judged later with operator feedback.
- ``champion``: the version the pipeline scores with. It only moves through
  ``promote_if_not_worse`` (a candidate that is not worse on the same held-out data) or
  ``rollback``.

Modules, one concern each: :mod:`.tracking` (the store: URI, artifact and cache folders, MLflow's
process-wide URIs, client, experiments), :mod:`.versions` (names, aliases, what a version carries),
:mod:`.logging` (a candidate's run and version), :mod:`.pyfunc` (the ``mlflow.pyfunc`` wrapper
and its frames), :mod:`.promotion_rule` (what "not worse" means), :mod:`.promotion` (moving
``champion`` and ``challenger`` and writing each decision), :mod:`.rollback` (putting an earlier
champion back, the champions' history) and :mod:`.loading` (champions by alias, downloaded and
cached).

mlflow is imported inside functions: importing this package must stay cheap for the code location.
"""

from typing import Any

from monitoring_pipelines.ml.catalogue import KINDS
from monitoring_pipelines.ml.registry.logging import CandidateInfo, RegistrableModel
from monitoring_pipelines.ml.registry.model_registry import ModelRegistry
from monitoring_pipelines.ml.registry.promotion import Decision
from monitoring_pipelines.ml.registry.promotion_rule import DEFAULT_GUARDS
from monitoring_pipelines.ml.registry.pyfunc import LoadFn, pyfunc_class, pyfunc_frame
from monitoring_pipelines.ml.registry.rollback import HISTORY_TAG
from monitoring_pipelines.ml.registry.tracking import DEFAULT_EXPERIMENT, TrackingTarget
from monitoring_pipelines.ml.registry.versions import (
    CHALLENGER,
    CHAMPION,
    DETECTOR_ARTIFACT,
    LOADER_TAG,
    ModelNotFound,
    VersionInfo,
    registered_model_name,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_GUARDS",
    "DETECTOR_ARTIFACT",
    "HISTORY_TAG",
    "KINDS",
    "LOADER_TAG",
    "CandidateInfo",
    "Decision",
    "LoadFn",
    "ModelNotFound",
    "ModelRegistry",
    "RegistrableModel",
    "TrackingTarget",
    "VersionInfo",
    "pyfunc_frame",
    "registered_model_name",
]


def __getattr__(name: str) -> Any:
    # Every logged model's python_model.pkl names the wrapper class
    # monitoring_pipelines.ml.registry.DetectorPyfunc (pyfunc.PYFUNC_CLASS_MODULE): cloudpickle
    # stores it by that reference and finds it here again when MLflow loads the model. It
    # subclasses mlflow's PythonModel, so it is built on first use, not at import.
    if name == "DetectorPyfunc":
        return pyfunc_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
