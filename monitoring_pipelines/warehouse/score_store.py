"""What scoring keeps between runs: the alert thresholds, the detectors' carried states and the
challengers' shadow scores."""

import json
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from monitoring_pipelines.warehouse.rows import utc_day, utc_now
from monitoring_pipelines.warehouse.schema import score_states, shadow_scores, thresholds


class ScoreStore:
    """The ``thresholds``, ``score_states`` and ``shadow_scores`` tables (a part of
    :class:`Warehouse`)."""

    def replace_thresholds(self, tenant: str, values: dict[str, float], policy: dict) -> None:
        """Replace a tenant's per-series thresholds (``series`` = ``service/metric``)."""
        now = utc_now()
        rows = [
            {
                "tenant": tenant,
                "series": series,
                "threshold": float(value),
                "policy": json.dumps(policy, sort_keys=True),
                "computed_at": now,
            }
            for series, value in sorted(values.items())
        ]
        with self.engine.begin() as conn:
            conn.execute(thresholds.delete().where(thresholds.c.tenant == tenant))
            if rows:
                conn.execute(thresholds.insert(), rows)

    def read_thresholds(self, tenant: str) -> tuple[dict[str, float], dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(thresholds).where(thresholds.c.tenant == tenant)).all()
        if not rows:
            return {}, {}
        return {r.series: float(r.threshold) for r in rows}, json.loads(rows[0].policy)

    def replace_shadow_scores(
        self,
        tenant: str,
        kind: str,
        version: int,
        start: datetime,
        end: datetime,
        frame: pd.DataFrame,
    ) -> int:
        """Replace one challenger's shadow scores of a tenant in ``[start, end)``, atomically."""
        with self.engine.begin() as conn:
            conn.execute(
                shadow_scores.delete().where(
                    shadow_scores.c.tenant == tenant,
                    shadow_scores.c.kind == kind,
                    shadow_scores.c.version == int(version),
                    shadow_scores.c.ts >= start,
                    shadow_scores.c.ts < end,
                )
            )
            self._insert(conn, shadow_scores, frame)
        return len(frame)

    def shadow_days(self, tenant: str, kind: str, version: int) -> list[pd.Timestamp]:
        """The UTC days on which a challenger version has shadow scores, oldest first."""
        query = sa.select(sa.func.min(shadow_scores.c.ts), sa.func.max(shadow_scores.c.ts)).where(
            shadow_scores.c.tenant == tenant,
            shadow_scores.c.kind == kind,
            shadow_scores.c.version == int(version),
        )
        with self.engine.connect() as conn:
            first, last = conn.execute(query).one()
        if first is None:
            return []
        span = pd.date_range(utc_day(first), utc_day(last), freq="D")
        counted = []
        with self.engine.connect() as conn:
            for day in span:
                found = conn.execute(
                    sa.select(shadow_scores.c.ts)
                    .where(
                        shadow_scores.c.tenant == tenant,
                        shadow_scores.c.kind == kind,
                        shadow_scores.c.version == int(version),
                        shadow_scores.c.ts >= day.to_pydatetime(),
                        shadow_scores.c.ts < (day + pd.Timedelta(days=1)).to_pydatetime(),
                    )
                    .limit(1)
                ).first()
                if found is not None:
                    counted.append(day)
        return counted

    # -- scoring state -------------------------------------------------------------------------

    def write_score_state(
        self, tenant: str, kind: str, version: int, as_of: int, payload: bytes, *, keep: int = 3
    ) -> None:
        """Store (or replace) a detector set's scoring state at ``as_of``; keep the newest
        ``keep`` positions of that tenant, kind and version."""
        key = (
            (score_states.c.tenant == tenant)
            & (score_states.c.kind == kind)
            & (score_states.c.version == int(version))
        )
        with self.engine.begin() as conn:
            conn.execute(score_states.delete().where(key, score_states.c.as_of == int(as_of)))
            conn.execute(
                score_states.insert(),
                [
                    {
                        "tenant": tenant,
                        "kind": kind,
                        "version": int(version),
                        "as_of": int(as_of),
                        "payload": payload,
                        "created_at": utc_now(),
                    }
                ],
            )
            kept = (
                sa.select(score_states.c.as_of)
                .where(key)
                .order_by(score_states.c.as_of.desc())
                .limit(keep)
            )
            newest = [row[0] for row in conn.execute(kept)]
            conn.execute(score_states.delete().where(key, score_states.c.as_of.not_in(newest)))

    def read_score_state(
        self, tenant: str, kind: str, version: int, not_after: int
    ) -> tuple[int, bytes] | None:
        """The newest stored state at or before ``not_after`` (UTC ns): ``(as_of, payload)``."""
        query = (
            sa.select(score_states.c.as_of, score_states.c.payload)
            .where(
                score_states.c.tenant == tenant,
                score_states.c.kind == kind,
                score_states.c.version == int(version),
                score_states.c.as_of <= int(not_after),
            )
            .order_by(score_states.c.as_of.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (int(row.as_of), bytes(row.payload))
