"""What two runs that must end alike are compared by: the warehouse's tables as text."""

import pandas as pd
import sqlalchemy as sa


def table_snapshot(url: str, tables, volatile) -> dict[str, pd.DataFrame]:
    """Each of ``tables`` at ``url`` without its ``volatile`` columns (ids, wall-clock times, run
    ids: what differs between two correct runs), in one form on SQLite and PostgreSQL, as text,
    its rows sorted."""
    engine = sa.create_engine(url)
    out = {}
    with engine.connect() as conn:
        for name in tables:
            frame = pd.read_sql(sa.text(f"SELECT * FROM {name}"), conn)
            frame = frame.drop(columns=[c for c in frame.columns if c in volatile])
            if name == "partition_states":
                # Versions count stagings; what must match is where each partition stands.
                frame = frame[["partition_key", "blocked"]]
            # One form on both databases: PostgreSQL returns datetimes and booleans, SQLite text
            # and 0/1.
            if name != "quarantine" and "ts" in frame.columns:
                frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
            for column in ("blocked", "is_gap"):
                if column in frame.columns:
                    frame[column] = frame[column].astype(bool)
            out[name] = frame.astype(str).sort_values(list(frame.columns)).reset_index(drop=True)
    engine.dispose()
    return out
