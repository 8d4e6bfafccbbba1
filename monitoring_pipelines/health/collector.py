"""The Prometheus collector: every figure read from its source at scrape time.

Three sources, each read once per scrape: the warehouse (rows, partitions, freshness, scoring
lag, incidents, outbox, deliveries), the MLflow registry (champions and retrains) and the
Dagster instance (failed runs). A source that fails is reported by
``monitoring_pipelines_exporter_source_up{source=...} 0`` and one log line naming it; the other
sources' figures are still served, and the exporter keeps running. Nothing is kept between
scrapes: the figures are always the sources' current ones.
"""

import bisect
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from monitoring_pipelines.alerting import types
from monitoring_pipelines.health.model_figures import ModelFigures, read_model_figures
from monitoring_pipelines.health.run_figures import read_run_failures
from monitoring_pipelines.health.warehouse_figures import WarehouseFigures, read_warehouse_figures
from monitoring_pipelines.settings import Settings, redact_url
from monitoring_pipelines.warehouse import Warehouse, metadata

NS = "monitoring_pipelines"
# Delivery latency buckets (seconds): a webhook answers in under a second, a retried receiver
# in minutes, one that keeps failing waits hours before it gives up.
DELIVERY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)
WAREHOUSE, MLFLOW, DAGSTER = "warehouse", "mlflow", "dagster"

log = logging.getLogger(__name__)


def _gauge(name: str, doc: str, labels: list[str], values: dict) -> GaugeMetricFamily:
    """A gauge family from ``{label value or tuple of them: value}``."""
    family = GaugeMetricFamily(f"{NS}_{name}", doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], float(value))
    return family


def warehouse_families(figures: WarehouseFigures, now: float) -> list[Metric]:
    """The warehouse's figures as metric families (see the README for what each means)."""
    tenants = figures.tenants
    lags = {t: figures.scoring_lag(t) for t in tenants}
    by_status = figures.notifications
    receivers = sorted({r for r, _ in by_status})

    def status_total(statuses: tuple[str, ...]) -> dict[str, int]:
        return {r: sum(by_status.get((r, s), 0) for s in statuses) for r in receivers}

    return [
        _gauge("ingested_rows", "Rows read from sources: accepted plus quarantined.",
               ["tenant"], figures.ingested_rows),
        _gauge("accepted_rows", "Rows accepted into the metrics table by the quality gate.",
               ["tenant"], figures.accepted_rows),
        _gauge("quarantined_rows",
               "Rows held back, by stage (parse: refused while reading; quality: by the gate) "
               "and the field at fault.", ["tenant", "stage", "field"], figures.quarantined_rows),
        _gauge("blocked_partitions", "Day x tenant partitions stopped by a blocking quality check.",
               ["tenant"], {t: figures.blocked_partitions.get(t, 0) for t in tenants}),
        _gauge("newest_accepted_point_timestamp_seconds", "Time of the newest accepted point.",
               ["tenant"], figures.newest_accepted),
        _gauge("data_freshness_seconds", "Seconds since the newest accepted point.", ["tenant"],
               {t: now - ts for t, ts in figures.newest_accepted.items()}),
        _gauge("scoring_lag_seconds",
               "How far the newest scored point is behind the newest gridded point.",
               ["tenant"], {t: lag for t, lag in lags.items() if lag is not None}),
        _gauge("open_incidents", "Incidents firing or acknowledged (not resolved).",
               ["tenant", "severity", "kind"], figures.open_incidents),
        _gauge("outbox_depth",
               "Notifications not delivered yet (pending, escalations waiting included, or being "
               "sent).",
               ["receiver"], status_total((types.PENDING, types.SENDING))),
        _gauge("dead_notifications", "Notifications given up on after their retries.",
               ["receiver"], status_total((types.DEAD,))),
        _gauge("oldest_undelivered_notification_age_seconds",
               "Seconds the oldest notification due and not delivered yet has waited.",
               ["receiver"], {r: now - at for r, at in figures.oldest_due_undelivered.items()}),
        _delivery_histogram(figures.delivery_seconds),
    ]  # fmt: skip


def _delivery_histogram(latencies: dict[str, list[float]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        f"{NS}_notification_delivery_seconds",
        "Seconds from a notification being due to it being sent, over the notifications kept.",
        labels=["receiver"],
    )
    for receiver, values in sorted(latencies.items()):
        values = sorted(values)
        buckets = [(str(float(le)), bisect.bisect_right(values, le)) for le in DELIVERY_BUCKETS]
        buckets.append(("+Inf", len(values)))
        family.add_metric([receiver], buckets, sum(values))
    return family


def model_families(figures: ModelFigures, now: float) -> list[Metric]:
    labels = ["tenant", "kind"]
    return [
        _gauge("champion_version", "Registered version behind the champion alias.", labels,
               figures.champion_version),
        _gauge("champion_created_timestamp_seconds", "When the champion version was registered.",
               labels, figures.champion_created),
        _gauge("champion_age_seconds", "Seconds since the champion version was registered.",
               labels, {k: now - at for k, at in figures.champion_created.items()}),
        _gauge("last_retrain_timestamp_seconds",
               "When the newest version was registered (the last retrain, promoted or not).",
               labels, figures.last_retrain),
    ]  # fmt: skip


def run_families(failures: dict[str, int]) -> list[Metric]:
    # A counter: runs are only added to the instance (deleting runs by hand reads as a reset).
    # The label is not ``job``: Prometheus gives every series its scrape job under that name.
    family = CounterMetricFamily(
        f"{NS}_failed_runs",
        "Runs in the Dagster instance that failed, by Dagster job.",
        labels=["dagster_job"],
    )
    for job, n in sorted(failures.items()):
        family.add_metric([job], n)
    return [family]


@dataclass
class Source:
    name: str
    where: str  # for the log line: redacted, never a secret
    read: Callable[[float], list[Metric]]


class PipelineHealthCollector(Collector):
    """Reads the warehouse, the registry and the Dagster instance on every ``collect()``."""

    def __init__(self, settings: Settings):
        self.settings = settings
        # A pool, not figures: scrapes reuse connections to the warehouse (the warehouse's
        # SQLite settings too: WAL, so a scrape never waits for a run that writes).
        self.engine = Warehouse(settings.warehouse_url, create=False).engine
        self._schema_ready = False

    def sources(self) -> list[Source]:
        s = self.settings
        return [
            Source(
                WAREHOUSE,
                redact_url(s.warehouse_url),
                lambda now: warehouse_families(self._warehouse_figures(now), now),
            ),
            Source(
                MLFLOW,
                redact_url(s.mlflow_tracking_uri),
                lambda now: model_families(read_model_figures(s.mlflow_tracking_uri), now),
            ),
            Source(
                DAGSTER,
                str(s.dagster_home),
                lambda _: run_families(read_run_failures(s.dagster_home)),
            ),
        ]

    def _warehouse_figures(self, now: float) -> WarehouseFigures:
        # Tables are created once, by the first scrape that reaches the warehouse (as every
        # command does), so a pipeline that has not run yet reads as empty, not as down, and a
        # warehouse that is down at start does not stop the exporter.
        if not self._schema_ready:
            metadata.create_all(self.engine)
            self._schema_ready = True
        return read_warehouse_figures(self.engine, now, self.settings.tenants)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            f"{NS}_exporter_source_up",
            "1 when the last scrape read the source, 0 when it failed (see the exporter's log).",
            labels=["source"],
        )
        took = GaugeMetricFamily(
            f"{NS}_exporter_source_read_seconds",
            "Seconds the last scrape spent reading the source.",
            labels=["source"],
        )
        for source in self.sources():
            start = time.perf_counter()
            try:
                families = source.read(time.time())
            except Exception as exc:
                log.error("%s (%s) not read: %s", source.name, source.where, _one_line(exc))
                families, ok = [], 0
            else:
                ok = 1
            yield from families
            up.add_metric([source.name], ok)
            took.add_metric([source.name], time.perf_counter() - start)
        yield up
        yield took

    def close(self) -> None:
        self.engine.dispose()


def _one_line(exc: Exception) -> str:
    """The error's first line with any URL password masked."""
    from monitoring_pipelines.ml.registry.versions import scrub

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return scrub(f"{type(exc).__name__}: {text}")[:300]
