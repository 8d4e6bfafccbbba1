"""Where everything lives, read from the environment at call time (never at import).

Every local file sits under ``MONITORING_HOME`` (default ``./.monitoring``) unless an environment
variable points elsewhere, so deleting that folder resets the embedded default completely.
"""

import json
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

DEFAULT_TENANTS = ("acme", "globex", "initech", "umbrella", "wayne")
DEFAULT_START_DATE = "2026-09-28"
# The period the last `monitoring-pipelines demo` generated, under the home.
DEMO_PERIOD_FILE = "demo/period.json"
DEFAULT_RESOLUTION_SECONDS = 300
DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"
# Where `monitoring-pipelines ui` serves the home's quality pages and reports.
DEFAULT_FILES_URL = "http://127.0.0.1:3002"
DEFAULT_REPORT_TIMEZONE = "UTC"
# Every tenant's detectors retrain weekly, Monday 02:00 UTC, over the rolling window.
DEFAULT_RETRAIN_CRON = "0 2 * * 1"
DEFAULT_SHADOW_DAYS = 1
# Where heavy jobs run their steps: in the run's own process, or on celery workers (production).
EXECUTORS = ("in_process", "celery")
DEFAULT_CELERY_BROKER_URL = "pyamqp://guest@127.0.0.1:5672//"
# The checkout's deploy/ folder: MONITORING_PROFILE=prod reads its env file.
DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy"
PROFILES = {"prod": DEPLOY_DIR / "prod.env"}
# Variables of a profile that hold paths: a relative one is relative to the checkout.
PATH_VARIABLES = (
    "MONITORING_HOME",
    "DAGSTER_HOME",
    "MONITORING_DROP_DIR",
    "DAGSTER_STORAGE_DIR",
    "DAGSTER_COMPUTE_LOGS_DIR",
    "MLFLOW_ARTIFACT_ROOT",
)


@dataclass(frozen=True)
class Settings:
    home: Path
    warehouse_url: str
    mlflow_tracking_uri: str
    dagster_home: Path
    drop_dir: Path
    tenants: tuple[str, ...]
    start_date: str
    resolution_seconds: int
    # The alerting policy (routing, silences, receivers) when set; otherwise
    # MONITORING_HOME/alerting.yaml if it exists, else the embedded default.
    alerting_file: Path | None
    # Where alert messages link to: the Dagster UI as the on-call person reaches it.
    dagster_url: str
    # Where links to the home's files (quality pages, quarantined rows) point: the address
    # `monitoring-pipelines ui` serves them at, or any server of MONITORING_HOME's folders.
    files_url: str = DEFAULT_FILES_URL
    # The timezone of report periods (Monday to Sunday, calendar months) and their schedules.
    report_timezone: str = DEFAULT_REPORT_TIMEZONE
    # When the retraining schedule runs training_job for every tenant (cron, UTC).
    retrain_cron: str = DEFAULT_RETRAIN_CRON
    # Live days a retrained challenger is scored in shadow before its promotion check.
    shadow_days: int = DEFAULT_SHADOW_DAYS
    # The detector kinds training_job trains (MONITORING_DETECTORS, comma-separated); empty: every
    # catalogued kind. Fewer kinds train faster on small machines and in tests.
    detectors: tuple[str, ...] = ()
    # Days kept per store (MONITORING_RETENTION over warehouse.retention.DEFAULT_DAYS).
    retention: tuple[tuple[str, int], ...] = ()
    # Tag keys holding personal data, pseudonymised at ingest (MONITORING_PERSONAL_TAGS).
    personal_tags: tuple[str, ...] = ()
    # MONITORING_EXECUTOR: `in_process` (default) or `celery` for ingest, training and scoring.
    executor: str = "in_process"
    # MONITORING_CELERY_BROKER_URL: the broker the celery executor and its workers share.
    celery_broker_url: str = DEFAULT_CELERY_BROKER_URL

    @property
    def reports_dir(self) -> Path:
        """Weekly and monthly reports: ``<kind>/<period start>/<scope>/report.{html,json,md}``."""
        return self.home / "reports"

    @property
    def reports_file(self) -> Path:
        """Report settings (SLO targets, capacity limits, business hours); optional."""
        return self.home / "reports.yaml"

    @property
    def quality_dir(self) -> Path:
        """GX validation results, one JSON and one HTML page per partition."""
        return self.home / "quality"

    @property
    def demo_dir(self) -> Path:
        return self.home / "demo"

    @property
    def demo_period_file(self) -> Path:
        """``{"start": ..., "end": ...}`` of the demo data in this home (see ``start_date``)."""
        return self.home / DEMO_PERIOD_FILE

    def ensure_dirs(self) -> None:
        for path in (self.home, self.dagster_home, self.drop_dir, self.quality_dir):
            path.mkdir(parents=True, exist_ok=True)


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def files_url(environ: dict[str, str] | None = None) -> str:
    """Where links to the home's files point: ``MONITORING_FILES_URL`` or the `ui` default."""
    env = os.environ if environ is None else environ
    return env.get("MONITORING_FILES_URL") or DEFAULT_FILES_URL


def _start_date(env, home: Path) -> str:
    """MONITORING_START_DATE; else the first day of the demo this home holds, so the day
    partitions start where its data starts; else DEFAULT_START_DATE."""
    if env.get("MONITORING_START_DATE"):
        return env["MONITORING_START_DATE"]
    path = home / DEMO_PERIOD_FILE
    if not path.exists():
        return DEFAULT_START_DATE
    try:
        start = json.loads(path.read_text())["start"]
        date.fromisoformat(start)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: 'start' must be a YYYY-MM-DD date ({exc})") from None
    return start


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines (``#`` comments, blank lines and ``export`` allowed); paths that are
    relative in the file are relative to the checkout, as honcho and make read them from there."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not name.strip().isidentifier():
            raise ValueError(f"{path}:{number}: expected NAME=value")
        values[name.strip()] = value.strip().strip("'\"")
    return values


def profile_environ(env) -> dict[str, str]:
    """The variables ``MONITORING_PROFILE`` adds (none set already is replaced); empty if unset."""
    name = env.get("MONITORING_PROFILE") or ""
    if not name:
        return {}
    if name not in PROFILES:
        raise ValueError(f"MONITORING_PROFILE: unknown profile {name!r} (known: prod)")
    values = read_env_file(PROFILES[name])
    for key in PATH_VARIABLES:
        if key in values and not Path(values[key]).is_absolute():
            values[key] = str(DEPLOY_DIR.parent / values[key])
    return {k: v for k, v in values.items() if not env.get(k)}


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """The settings of ``environ`` (default: the process environment). With
    ``MONITORING_PROFILE=prod`` the profile's variables fill what is unset; for the process
    environment they are set in it, since Dagster (``DAGSTER_HOME`` and the variables its
    ``dagster.yaml`` names) and MLflow read it themselves."""
    if environ is None:
        os.environ.update(profile_environ(os.environ))
        env = os.environ
    else:
        env = {**environ, **profile_environ(environ)}
    home = Path(env.get("MONITORING_HOME") or ".monitoring").expanduser().resolve()
    tenants = tuple(
        t.strip() for t in (env.get("MONITORING_TENANTS") or ",".join(DEFAULT_TENANTS)).split(",")
    )
    return Settings(
        home=home,
        warehouse_url=env.get("MONITORING_WAREHOUSE_URL") or _sqlite_url(home / "warehouse.db"),
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or _sqlite_url(home / "mlflow.db"),
        dagster_home=Path(env.get("DAGSTER_HOME") or home / "dagster").expanduser().resolve(),
        drop_dir=Path(env.get("MONITORING_DROP_DIR") or home / "drop").expanduser().resolve(),
        tenants=tuple(t for t in tenants if t),
        start_date=_start_date(env, home),
        resolution_seconds=int(
            env.get("MONITORING_RESOLUTION_SECONDS") or DEFAULT_RESOLUTION_SECONDS
        ),
        alerting_file=(
            Path(env["MONITORING_ALERTING_FILE"]).expanduser().resolve()
            if env.get("MONITORING_ALERTING_FILE")
            else None
        ),
        dagster_url=env.get("MONITORING_DAGSTER_URL") or DEFAULT_DAGSTER_URL,
        files_url=files_url(env),
        report_timezone=env.get("MONITORING_REPORT_TIMEZONE") or DEFAULT_REPORT_TIMEZONE,
        retrain_cron=env.get("MONITORING_RETRAIN_CRON") or DEFAULT_RETRAIN_CRON,
        shadow_days=int(env.get("MONITORING_SHADOW_DAYS") or DEFAULT_SHADOW_DAYS),
        detectors=_detectors(env.get("MONITORING_DETECTORS") or ""),
        retention=_retention(env.get("MONITORING_RETENTION") or ""),
        personal_tags=tuple(
            t.strip() for t in (env.get("MONITORING_PERSONAL_TAGS") or "").split(",") if t.strip()
        ),
        executor=_executor(env.get("MONITORING_EXECUTOR") or "in_process"),
        celery_broker_url=env.get("MONITORING_CELERY_BROKER_URL") or DEFAULT_CELERY_BROKER_URL,
    )


def _retention(text: str) -> tuple[tuple[str, int], ...]:
    from monitoring_pipelines.warehouse.retention import parse_retention

    return parse_retention(text)


def _executor(name: str) -> str:
    if name not in EXECUTORS:
        raise ValueError(f"MONITORING_EXECUTOR: {name!r} is not one of {', '.join(EXECUTORS)}")
    return name


def _detectors(text: str) -> tuple[str, ...]:
    from monitoring_pipelines.ml.catalogue import KINDS, parse_kinds

    try:
        return tuple(parse_kinds(text)) if text.strip() else KINDS
    except ValueError as exc:
        raise ValueError(f"MONITORING_DETECTORS: {exc}") from None


def redact_url(url: str) -> str:
    """A database URL safe for logs and metadata: the password is replaced by ``***``."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"
