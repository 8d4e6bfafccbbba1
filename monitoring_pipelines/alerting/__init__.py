"""Alerting: anomaly scores become incidents, incidents become routed notifications, and the
outbox delivers them at least once. Plain Python, no Dagster import: the assets and sensors in
``monitoring_pipelines.assets.alerting`` and ``monitoring_pipelines.sensors`` are thin wrappers."""
