"""Champions and retrains as the MLflow registry holds them: two searches per scrape.

One search of the pipeline's registered models gives every ``champion`` alias, one search of
their versions gives every version's creation time, whatever the number of tenants and kinds.
mlflow is imported here only when a scrape reads the registry.
"""

from dataclasses import dataclass, field
from pathlib import Path

from monitoring_pipelines.ml.catalogue import KINDS
from monitoring_pipelines.ml.registry.versions import CHAMPION

PREFIX = "anomaly-"
_FILTER = f"name LIKE '{PREFIX}%'"
_PAGE = 1000


@dataclass
class ModelFigures:
    """Per (tenant, kind): the champion's version and creation time, and the newest version's
    creation time (the last retrain, promoted or not); times are UTC epoch seconds."""

    champion_version: dict[tuple[str, str], int] = field(default_factory=dict)
    champion_created: dict[tuple[str, str], float] = field(default_factory=dict)
    last_retrain: dict[tuple[str, str], float] = field(default_factory=dict)


def parse_model_name(name: str) -> tuple[str, str] | None:
    """``anomaly-<kind>-<tenant>`` as (tenant, kind), or None for another model of the store."""
    for kind in sorted(KINDS, key=len, reverse=True):
        head = f"{PREFIX}{kind}-"
        if name.startswith(head) and len(name) > len(head):
            return name[len(head) :], kind
    return None


def store_exists(tracking_uri: str) -> bool:
    """False for an embedded SQLite store not created yet: reading it would create it, and the
    exporter only reads (no models yet is then the answer)."""
    if not tracking_uri.startswith("sqlite:///"):
        return True
    return Path(tracking_uri.removeprefix("sqlite:///")).exists()


def read_model_figures(tracking_uri: str) -> ModelFigures:
    figures = ModelFigures()
    if not store_exists(tracking_uri):
        return figures
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    champions: dict[str, int] = {}
    for model in _all(client.search_registered_models):
        version = (model.aliases or {}).get(CHAMPION)
        if version is not None and parse_model_name(model.name):
            champions[model.name] = int(version)
    for mv in _all(client.search_model_versions):
        key = parse_model_name(mv.name)
        if key is None:
            continue
        created = int(mv.creation_timestamp) / 1000
        figures.last_retrain[key] = max(figures.last_retrain.get(key, 0.0), created)
        if champions.get(mv.name) == int(mv.version):
            figures.champion_version[key] = int(mv.version)
            figures.champion_created[key] = created
    return figures


def _all(search) -> list:
    """Every page of an MLflow search over the pipeline's registered models."""
    out, token = [], None
    while True:
        page = search(filter_string=_FILTER, max_results=_PAGE, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out
