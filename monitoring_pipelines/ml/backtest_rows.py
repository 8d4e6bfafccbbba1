"""From grid scores back to the rows a user gave: one output row per input row, in input order.

The backtest scores groups on the pipeline's grid (:mod:`~monitoring_pipelines.ml.frames`); an input
row lands in one grid step and carries that step's member scores, ensemble score and decisions.
Several input rows in one step (duplicates, sub-step jitter) share them; only the first of them
carries the step's alert.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.frames import GroupKey, to_utc

ENSEMBLE = "ensemble"


@dataclass
class Group:
    """One backtested group: a tenant's service from records, or a single named series."""

    key: GroupKey
    frame: pd.DataFrame
    names: dict[str, str]  # frame column -> series name
    n_train: int


def is_records(data) -> bool:
    return isinstance(data, pd.DataFrame) and {"tenant", "service", "metric"} <= set(data.columns)


def rows_out(data, groups, row_maps, kinds, member_scores, ensemble, decisions):
    """Per series, one row per input row in input order, with its grid step's scores and decisions;
    for record input also the whole input as one frame (else None)."""
    if is_records(data):
        return _record_rows(data, groups, row_maps, kinds, member_scores, ensemble, decisions)
    return _series_rows(data, groups, row_maps, kinds, member_scores, ensemble, decisions), None


def _record_rows(data, groups, row_index, kinds, member_scores, ensemble, decisions):
    series: dict[str, pd.DataFrame] = {}
    wide = {ENSEMBLE: {g.key: _frame_of(g, ensemble[g.key]) for g in groups}}
    for kind in kinds:
        wide[kind] = member_scores[kind]
    columns = {f"{k}_score": row_index.take(wide[k]) for k in kinds}
    columns[f"{ENSEMBLE}_score"] = row_index.take(wide[ENSEMBLE])
    anomalous = {g.key: _frame_of(g, decisions[g.key][0]) for g in groups}
    alerts = {g.key: _frame_of(g, decisions[g.key][1]) for g in groups}
    training = {
        g.key: _frame_of(
            g,
            np.repeat((np.arange(len(g.frame)) < g.n_train)[:, None], g.frame.shape[1], axis=1),
        )
        for g in groups
    }
    rows = pd.DataFrame(
        {
            "tenant": data["tenant"].astype(str).to_numpy(),
            "service": data["service"].astype(str).to_numpy(),
            "metric": data["metric"].astype(str).to_numpy(),
            "timestamp": to_utc(data["ts"]),
            "value": pd.to_numeric(data["value"], errors="coerce").to_numpy(dtype="float64"),
            **columns,
            "is_anomaly": row_index.take(anomalous) == 1.0,
            "alert": (row_index.take(alerts) == 1.0) & row_index.first_of_cell(),
            "training": row_index.take(training) == 1.0,
        }
    )
    names = (rows["tenant"] + "/" + rows["service"] + "/" + rows["metric"]).to_numpy()
    for name in pd.unique(names):
        part = rows.loc[names == name].drop(columns=["tenant", "service", "metric"])
        series[str(name)] = part.reset_index(drop=True)
    return series, rows


def _series_rows(data, groups, positions, kinds, member_scores, ensemble, decisions):
    series: dict[str, pd.DataFrame] = {}
    original = {str(k): k for k in data}
    for group in groups:
        name = group.key[0]
        ts, values = data[original[name]]
        pos = positions[name]
        ok = pos >= 0
        out = {
            "timestamp": to_utc(ts),
            "value": pd.to_numeric(
                pd.Series(np.asarray(values, dtype=object)), errors="coerce"
            ).to_numpy(dtype="float64"),
        }
        for kind in kinds:
            out[f"{kind}_score"] = _take(member_scores[kind].get(group.key), pos, ok)
        out[f"{ENSEMBLE}_score"] = _take(ensemble[group.key], pos, ok)
        anomalous, alert = decisions[group.key]
        out["is_anomaly"] = _take(anomalous, pos, ok) == 1.0
        first = ~pd.Series(pos).duplicated().to_numpy() & ok
        out["alert"] = (_take(alert, pos, ok) == 1.0) & first
        out["training"] = np.where(ok, pos < group.n_train, False)
        series[name] = pd.DataFrame(out)
    return series


def _frame_of(group: Group, values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        np.asarray(values, dtype="float64"), index=group.frame.index, columns=group.frame.columns
    )


def _take(grid, pos: np.ndarray, ok: np.ndarray) -> np.ndarray:
    out = np.full(pos.size, np.nan)
    if grid is None:
        return out
    values = np.asarray(grid, dtype="float64")
    values = values[:, 0] if values.ndim == 2 else values
    out[ok] = values[pos[ok]]
    return out
