"""The one catalogue of detector kinds: adding a detector is one module and one row here.

Everything that needs to know which kinds exist asks this table: training and its assets, the MLflow
registry (registered model names, pip requirements), the warehouse's score columns, the ensemble's
default weights, the backtest's default members, the CLI's choices and the jobs. Classes are
imported only when asked for (TensorFlow and Prophet are heavy; the code location imports this
module), so a row names its module and class instead of holding the class.
"""

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitoring_pipelines.ml.base import Detector


@dataclass(frozen=True)
class DetectorKind:
    name: str
    module: str
    class_name: str
    # What a reader of the Dagster UI and the MLflow registry is told the detector does.
    description: str
    # The Dagster kind tag shown on its training asset.
    library: str
    # Packages its MLflow model needs beyond numpy, pandas and scipy (always listed).
    pip_requirements: tuple[str, ...] = ()
    # Weight in the ensemble when no validation data has chosen one; 0 keeps the member trained,
    # registered and scored beside the ensemble but out of it.
    default_weight: float = 1.0

    def detector_class(self) -> type["Detector"]:
        return getattr(import_module(self.module), self.class_name)

    @property
    def score_column(self) -> str:
        return f"{self.name}_score"

    @property
    def asset_name(self) -> str:
        return f"{self.name}_model"


_ROWS = (
    DetectorKind(
        name="isolation_forest",
        module="monitoring_pipelines.ml.isolation_forest",
        class_name="IsolationForestDetector",
        description="Isolation Forest on scale-free features (trailing z of value and of its "
        "change, time of day and week, the other metrics of the same service).",
        library="scikitlearn",
        pip_requirements=("scikit-learn",),
        # Measured on real single series (every SKAB sensor alone, one level for all series):
        # z-score alone 54.9, Isolation Forest 0.69 + z-score 1.31 14.8 on the event score; the
        # forest dilutes the member that fires. With labelled incidents a tenant's weights are
        # learned instead (ml.training.learn_combiner).
        default_weight=0.0,
    ),
    DetectorKind(
        name="lstm",
        module="monitoring_pipelines.ml.lstm",
        class_name="LstmDetector",
        description="LSTM forecaster over all metrics of a service; its error, normalised per "
        "metric, is the raw score.",
        library="tensorflow",
        pip_requirements=("tensorflow-cpu",),
        default_weight=0.0,
    ),
    DetectorKind(
        name="prophet",
        module="monitoring_pipelines.ml.prophet_model",
        class_name="ProphetDetector",
        description="Prophet per series with a flat trend and only the seasonality its training "
        "data has; the residual against its own causal error distribution is the raw score.",
        library="prophet",
        pip_requirements=("prophet",),
        default_weight=0.0,
    ),
    DetectorKind(
        name="zscore",
        module="monitoring_pipelines.ml.zscore",
        class_name="ZScoreDetector",
        description="Seasonal robust z-scores: how far each point is from the usual level for its "
        "time of the week, how sudden its change is, whether the series froze or burst into "
        "noise; each part calibrated per series, the most surprising one is the raw score.",
        library="numpy",
        default_weight=1.0,
    ),
    DetectorKind(
        name="pca",
        module="monitoring_pipelines.ml.pca",
        class_name="PcaDetector",
        description="PCA over all metrics of a service (Hotelling T-squared and Q residual against "
        "the training state); a single series is embedded with its recent changes.",
        library="numpy",
        # Half a vote in the noisy-OR ensemble (ml/ensemble.py): on SKAB's sensors one by one
        # (NAB-style) z-score alone 54.5, with PCA at 0.5 59.1, at 1 57.0; on SKAB's machines
        # (point F1 at FAR <= 15%) z-score alone 0.22, with PCA at 0.5 0.57, PCA alone 0.57.
        default_weight=0.5,
    ),
)

CATALOGUE: dict[str, DetectorKind] = {row.name: row for row in _ROWS}
KINDS: tuple[str, ...] = tuple(CATALOGUE)


def kind(name: str) -> DetectorKind:
    """The catalogue row of ``name``; a one-line ValueError naming the known kinds otherwise."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise ValueError(
            f"unknown detector kind {name!r}; choose from {', '.join(KINDS)}"
        ) from None


def detector_class(name: str) -> type["Detector"]:
    """The detector class of kind ``name``, imported only now."""
    return kind(name).detector_class()


def parse_kinds(text: str) -> list[str]:
    """``"a,b"`` as a list of known kinds, in order, each once; a one-line ValueError otherwise."""
    names = list(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in names if k not in CATALOGUE]
    if unknown:
        known = ", ".join(KINDS)
        raise ValueError(f"unknown detector kind {', '.join(unknown)}; choose from {known}")
    if not names:
        raise ValueError(f"no detector kind given; choose from {', '.join(KINDS)}")
    return names
