"""What the reports read from the MLflow registry, through ``ml.registry.ModelRegistry`` and its
MLflow client: the versions of a tenant's detectors (tags, description, creation time) and the
tenant's Prophet champion for the forecast. mlflow is imported inside the methods."""

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


class MlflowRegistry:
    def __init__(self, tracking_uri: str, artifact_root: Path | None = None):
        from monitoring_pipelines.ml.registry import ModelRegistry

        self.models = ModelRegistry(tracking_uri, artifact_root)
        # One read per tenant for all the reports written with this instance (a period and
        # the one before, all tenants and each one).
        self._versions: dict[str, list[dict]] = {}
        self._champions: dict[str, dict | None] = {}

    def versions(self, tenant: str) -> list[dict]:
        """Every registered version of the tenant's detectors, oldest first per kind."""
        if tenant not in self._versions:
            self._versions[tenant] = self._read_versions(tenant)
        return self._versions[tenant]

    def _read_versions(self, tenant: str) -> list[dict]:
        from mlflow.exceptions import MlflowException

        from monitoring_pipelines.ml import registry

        out = []
        with self.models.activate():
            client = self.models.client()
            for kind in registry.KINDS:
                try:
                    name = registry.registered_model_name(kind, tenant)
                    found = client.search_model_versions(f"name = '{name}'")
                except (ValueError, MlflowException):
                    continue
                for mv in sorted(found, key=lambda v: int(v.version)):
                    created = mv.creation_timestamp
                    out.append(
                        {
                            "tenant": tenant,
                            "kind": kind,
                            "version": int(mv.version),
                            "created": None if created is None else _iso_ms(int(created)),
                            "tags": dict(mv.tags or {}),
                            "aliases": sorted(mv.aliases or ()),
                        }
                    )
        return out

    def prophet_champion(self, tenant: str) -> dict | None:
        """``{"detector", "version"}`` of the tenant's Prophet champion, or None."""
        if tenant not in self._champions:
            self._champions[tenant] = self._load_champion(tenant)
        return self._champions[tenant]

    def _load_champion(self, tenant: str) -> dict | None:
        from monitoring_pipelines.ml import registry

        # Prophet logs an error at import when plotly (its optional plotting) is missing.
        logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
        try:
            detector, info = self.models.load_by_alias("prophet", tenant)
        except (registry.ModelNotFound, ValueError):
            return None
        except Exception as exc:  # an unloadable champion leaves the fitted forecast in place
            logger.warning("prophet champion of %s not loaded: %s", tenant, exc)
            return None
        return {"detector": detector, "version": info.version}


def _iso_ms(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def default_registry(tracking_uri: str, artifact_root: Path | None = None) -> MlflowRegistry | None:
    """The registry at ``tracking_uri``, or None when it is a SQLite file that does not exist yet
    (reading must not create an empty MLflow store)."""
    if tracking_uri.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        database = make_url(tracking_uri).database
        if not database or not Path(database).expanduser().exists():
            return None
    return MlflowRegistry(tracking_uri, artifact_root)
