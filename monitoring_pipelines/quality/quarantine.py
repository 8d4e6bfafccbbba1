"""The quarantine frame of a gated partition: each held-back row as received, with its reason."""

import json

import pandas as pd

from monitoring_pipelines.quality.checks.base import ts_text
from monitoring_pipelines.quality.jsonsafe import json_safe
from monitoring_pipelines.sources import records

_COLUMNS = tuple(c for c in records.QUARANTINE_COLUMNS if c != "stage")


def quarantine_frame(data: pd.DataFrame, held: dict[int, tuple[str, str, str]]) -> pd.DataFrame:
    """Rows of ``data`` at the positions in ``held`` (position -> check, field, reason), with the
    quarantine columns but ``stage``; ``raw`` is the whole row as strict JSON."""
    if not held:
        return records.empty_quarantine().drop(columns=["stage"])
    positions = sorted(held)
    rows = data.iloc[positions]
    columns = [str(c) for c in data.columns]
    cells = [rows[c].to_numpy(dtype=object) for c in data.columns]
    raw = [
        json.dumps(
            {c: json_safe(v) for c, v in zip(columns, values, strict=True)},
            allow_nan=False,
            ensure_ascii=False,
        )
        for values in zip(*cells, strict=True)
    ]

    def column(name: str, default):
        if name in data.columns:
            return rows[name].to_numpy(dtype=object)
        return [default(pos) for pos in positions]

    sources = [
        "unknown" if json_safe(v) is None else str(v) for v in column("source", lambda _: "unknown")
    ]
    source_rows = []
    for pos, v in zip(positions, column("source_row", lambda p: p + 1), strict=True):
        try:
            source_rows.append(int(v))
        except (TypeError, ValueError):
            source_rows.append(pos + 1)
    tenants = [None if json_safe(v) is None else str(v) for v in column("tenant", lambda _: None)]
    out = pd.DataFrame(
        {
            "source": pd.Series(sources, dtype=object),
            "source_row": pd.Series(source_rows, dtype="int64"),
            "tenant": pd.Series(tenants, dtype=object),
            "ts": pd.Series([ts_text(v) for v in column("ts", lambda _: None)], dtype=object),
            "field": pd.Series([held[p][1] for p in positions], dtype=object),
            "reason": pd.Series([held[p][2] for p in positions], dtype=object),
            "raw": pd.Series(raw, dtype=object),
        }
    )
    return out[list(_COLUMNS)]
