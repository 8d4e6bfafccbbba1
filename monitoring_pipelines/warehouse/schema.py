"""The warehouse tables (SQLAlchemy Core), one per kind of row the pipeline keeps, and the
statuses stored in them."""

import sqlalchemy as sa

from monitoring_pipelines.ml.catalogue import CATALOGUE

metadata = sa.MetaData()

TS = sa.DateTime(timezone=True)


def _series_point() -> list[sa.Column]:
    """The key columns of a point of a series; fresh Column objects for each table."""
    return [
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("ts", TS, nullable=False),
    ]


# Rows exactly as parsed from a source, before the quality gate: raw_metrics reads its partition
# from here, so a dropped file, a query and the demo all pass through the same gate.
landing = sa.Table(
    "landing",
    metadata,
    sa.Column("source", sa.String(512), nullable=False),
    sa.Column("source_row", sa.BigInteger, nullable=False),
    *_series_point(),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("tags", sa.Text, nullable=False, default=""),
    sa.PrimaryKeyConstraint("source", "source_row"),
    sa.Index("ix_landing_tenant_ts", "tenant", "ts"),
)

metrics = sa.Table(
    "metrics",
    metadata,
    *_series_point(),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("tags", sa.Text, nullable=False, default=""),
    sa.Column("source", sa.String(512), nullable=False),
    sa.PrimaryKeyConstraint("tenant", "service", "metric", "ts"),
    sa.Index("ix_metrics_tenant_ts", "tenant", "ts"),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    # parse: refused while reading the source; quality: refused by the quality gate.
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("partition_key", sa.String(128), nullable=True),
    sa.Column("source", sa.String(512), nullable=False),
    sa.Column("source_row", sa.BigInteger, nullable=False),
    sa.Column("tenant", sa.String(256), nullable=True),
    sa.Column("ts", sa.String(64), nullable=True),
    sa.Column("field", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("raw", sa.Text, nullable=False),
    sa.Column("quarantined_at", TS, nullable=False),
    sa.Index("ix_quarantine_source", "source"),
    sa.Index("ix_quarantine_partition", "stage", "partition_key"),
)

# One regular grid per series: gaps are rows with value NULL and is_gap true, never invented values.
clean_metrics = sa.Table(
    "clean_metrics",
    metadata,
    *_series_point(),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("is_gap", sa.Boolean, nullable=False),
    sa.Column("n_raw", sa.Integer, nullable=False),
    sa.PrimaryKeyConstraint("tenant", "service", "metric", "ts"),
    sa.Index("ix_clean_tenant_ts", "tenant", "ts"),
)

# Per point: each detector's calibrated score, the ensemble score, the decision and the model
# versions that produced them. Keyed like the metrics, so re-scoring a partition replaces it.
anomaly_scores = sa.Table(
    "anomaly_scores",
    metadata,
    *_series_point(),
    sa.Column("value", sa.Float, nullable=True),
    *(sa.Column(row.score_column, sa.Float, nullable=True) for row in CATALOGUE.values()),
    sa.Column("ensemble_score", sa.Float, nullable=True),
    sa.Column("threshold", sa.Float, nullable=True),
    sa.Column("is_anomaly", sa.Boolean, nullable=False),
    sa.Column("model_versions", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.PrimaryKeyConstraint("tenant", "service", "metric", "ts"),
    sa.Index("ix_scores_tenant_ts", "tenant", "ts"),
)

# Challengers scored in shadow beside the champions on live days: per point, the challenger's
# own calibrated score and the ensemble score with it in its champion's place, against the same
# threshold. Read by the promotion gate (what the challenger would have flagged); never by
# alerting, so nothing here ever pages.
shadow_scores = sa.Table(
    "shadow_scores",
    metadata,
    *_series_point(),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("ensemble_score", sa.Float, nullable=True),
    sa.Column("threshold", sa.Float, nullable=True),
    sa.Column("is_anomaly", sa.Boolean, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.PrimaryKeyConstraint("tenant", "service", "metric", "ts", "kind", "version"),
    sa.Index("ix_shadow_tenant_kind_version", "tenant", "kind", "version", "ts"),
)

# The alert threshold of each series on the ensemble score, calibrated on held-out data to a target
# false-alarm rate. Kept apart from the models: changing the policy never retrains anything.
thresholds = sa.Table(
    "thresholds",
    metadata,
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("series", sa.String(200), nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("policy", sa.Text, nullable=False),
    sa.Column("computed_at", TS, nullable=False),
    sa.PrimaryKeyConstraint("tenant", "series"),
)

# What each champion detector's calibrators had seen when a tenant's scoring stopped at ``as_of``
# (UTC ns): the next day is scored from it instead of from the first point. Keyed by position,
# so re-scoring an older day adds an older row and never overwrites a newer one.
score_states = sa.Table(
    "score_states",
    metadata,
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("as_of", sa.BigInteger, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.PrimaryKeyConstraint("tenant", "kind", "version", "as_of"),
)

# One row per incident, keyed by its fingerprint (computed from the data), so re-running a
# partition updates the incident instead of raising a second one.
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("fingerprint", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("service", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", TS, nullable=False),
    sa.Column("last_seen_at", TS, nullable=False),
    sa.Column("resolved_at", TS, nullable=True),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("model_versions", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("partition_key", sa.String(128), nullable=True),
    sa.Column("acknowledged_by", sa.String(128), nullable=True),
    sa.Column("acknowledged_at", TS, nullable=True),
    # Set when a person resolved the incident by hand; re-runs keep it resolved.
    sa.Column("resolved_by", sa.String(128), nullable=True),
    # Reviewer feedback (e.g. "false_positive"), kept for the reports and the promotion gate.
    sa.Column("feedback", sa.String(32), nullable=True),
    sa.Column("feedback_note", sa.Text, nullable=True),
    sa.Column("updated_at", TS, nullable=False),
    sa.Index("ix_alerts_tenant_started", "tenant", "started_at"),
    sa.Index("ix_alerts_status", "status"),
)

# The outbox: one row per notification, keyed by its idempotency key, written in the same
# transaction as the incident it is about; the dispatcher delivers it at least once.
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("idempotency_key", sa.String(64), primary_key=True),
    sa.Column("fingerprint", sa.String(32), nullable=False),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("receiver", sa.String(128), nullable=False),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("locale", sa.String(8), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    # pending -> sending (leased) -> sent | dead | cancelled (an escalation whose incident was
    # acknowledged or resolved first); suppressed rows (silenced, rate limited) are kept with
    # their reason so nothing disappears without a trace.
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("not_before", TS, nullable=True),
    sa.Column("next_attempt_at", TS, nullable=False),
    sa.Column("lease_until", TS, nullable=True),
    # Which claim holds the lease: a dispatcher whose lease expired and was taken over by another
    # cannot overwrite the newer claim's outcome.
    sa.Column("lease_token", sa.String(32), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("sent_at", TS, nullable=True),
    sa.Index("ix_notifications_due", "status", "next_attempt_at"),
    sa.Index("ix_notifications_fingerprint", "fingerprint"),
)

# One row per ingested source (file or query) with its fingerprint and counts.
ingests = sa.Table(
    "ingests",
    metadata,
    sa.Column("source", sa.String(512), primary_key=True),
    sa.Column("fingerprint", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("rows_in", sa.BigInteger, nullable=False),
    sa.Column("staged", sa.BigInteger, nullable=False),
    sa.Column("quarantined", sa.BigInteger, nullable=False),
    sa.Column("partitions", sa.Text, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    # The Dagster run that staged this content, so the sensor knows which partitions to request.
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("ingested_at", TS, nullable=False),
    # Partitions this content must see gated before the ingest is done (JSON list): those it
    # touches now and those its previous content touched, whose rows it no longer provides.
    sa.Column("pending", sa.Text, nullable=True),
)

# Ingest status: "staged" once the file's rows are in landing (atomically with its parse
# quarantine, its ingest row and the bumped partition versions), "ingested" once every partition
# in ``pending`` is gated at that version and gridded or recorded as blocked. A re-run skips only
# "ingested" content, so a crash anywhere before that is redone, never lost.
STAGED, INGESTED, FAILED = "staged", "ingested", "failed"

# Where each day x tenant partition stands. Staging bumps ``version``; a gate run records the
# version it judged (with the verdict), a grid run the version it gridded. A partition is settled
# when the gate caught up with the version and the grid did too, unless the gate blocked it.
partition_states = sa.Table(
    "partition_states",
    metadata,
    sa.Column("partition_key", sa.String(320), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("gated_version", sa.BigInteger, nullable=False),
    sa.Column("gridded_version", sa.BigInteger, nullable=False),
    sa.Column("blocked", sa.Boolean, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

# Who did what, when, to what, and why: acknowledgements, resolves, false positives, model
# promotions and rollbacks, tenant purges, alerting policy changes, retention runs. Append-only:
# warehouse/audit.py offers insert and read only (on PostgreSQL a trigger refuses UPDATE and
# DELETE). ``before`` and ``after`` are JSON.
audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("at", TS, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("tenant", sa.String(64), nullable=True),
    sa.Column("target", sa.String(512), nullable=True),
    sa.Column("before", sa.Text, nullable=True),
    sa.Column("after", sa.Text, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Index("ix_audit_tenant_at", "tenant", "at"),
    sa.Index("ix_audit_action_at", "action", "at"),
)

RECORD_TABLES = {
    "landing": landing,
    "metrics": metrics,
    "clean_metrics": clean_metrics,
    "anomaly_scores": anomaly_scores,
    "shadow_scores": shadow_scores,
}
