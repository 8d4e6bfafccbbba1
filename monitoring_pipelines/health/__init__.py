"""The pipeline watching itself: its health as Prometheus metrics (``monitoring-pipelines
exporter``). Plain Python: dagster and mlflow are imported only while a scrape reads them."""

from monitoring_pipelines.health.collector import NS, PipelineHealthCollector

__all__ = ["NS", "PipelineHealthCollector"]
