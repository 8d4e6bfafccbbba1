"""Files in and out of ``monitoring-pipelines backtest``.

In: a file or a folder of CSV/Parquet files. A ``timestamp,value`` file is one series named by its
path relative to ``--data`` (``web/checkout_latency.csv``); a metric-record file
(``tenant, service, metric, ts, value``) holds many series named ``tenant/service/metric``.
Out: one CSV per series at the same relative path under ``--out`` (record series at
``<tenant>/<service>/<metric>.csv``), one row per input row in input order, and ``summary.csv``.
"""

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from monitoring_pipelines.sources.listing import data_files

RECORD_COLUMNS = ("tenant", "service", "metric")


class BacktestInputError(ValueError):
    """One line naming the file and what is wrong."""


@dataclass
class BacktestInputs:
    series: dict[str, tuple[pd.Series, pd.Series]] = field(default_factory=dict)
    records: list[pd.DataFrame] = field(default_factory=list)

    @property
    def records_frame(self) -> pd.DataFrame | None:
        return pd.concat(self.records, ignore_index=True) if self.records else None

    def series_names(self) -> list[str]:
        """Every series name the inputs hold, as label keys must spell them."""
        names = list(self.series)
        for frame in self.records:
            keys = frame[list(RECORD_COLUMNS)].drop_duplicates()
            names += ["/".join(row) for row in keys.itertuples(index=False)]
        return names


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return data_files(path)
    raise BacktestInputError(f"{path}: no such file or directory")


def _read(path: Path) -> pd.DataFrame:
    try:
        if path.name.lower().endswith((".parquet", ".pq")):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BacktestInputError(f"{path}: cannot read ({reason})") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    return frame


def read_inputs(data: Path) -> BacktestInputs:
    data = Path(data)
    inputs = BacktestInputs()
    root = data if data.is_dir() else data.parent
    for path in _files(data):
        frame = _read(path)
        ts_column = "timestamp" if "timestamp" in frame.columns else "ts"
        if ts_column not in frame.columns or "value" not in frame.columns:
            raise BacktestInputError(
                f"{path}: needs columns timestamp,value or tenant,service,metric,ts,value; "
                f"found {', '.join(frame.columns[:8])}"
            )
        values = pd.to_numeric(frame["value"], errors="coerce")
        if all(c in frame.columns for c in RECORD_COLUMNS):
            inputs.records.append(
                pd.DataFrame(
                    {
                        **{c: frame[c].astype(str) for c in RECORD_COLUMNS},
                        "ts": frame[ts_column],
                        "value": values,
                    }
                )
            )
        else:
            inputs.series[path.relative_to(root).as_posix()] = (frame[ts_column], values)
    if not inputs.series and not inputs.records:
        raise BacktestInputError(f"{data}: no CSV or Parquet file found")
    return inputs


def read_labels(path: Path) -> dict[str, list]:
    """Label windows ``{series: [[start, end], ...]}``; one line naming the file if unusable."""
    try:
        labels = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BacktestInputError(f"{path}: labels file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BacktestInputError(f"{path}: not a JSON labels file ({reason})") from None
    if not isinstance(labels, dict):
        raise BacktestInputError(
            f"{path}: labels must be a JSON object {{series: [[start, end], ...]}}, "
            f"not a {type(labels).__name__}"
        )
    for name, windows in labels.items():
        if not isinstance(windows, list) or not all(
            isinstance(w, list | tuple) and len(w) == 2 for w in windows
        ):
            raise BacktestInputError(
                f"{path}: {name!r}: expected a list of [start, end] pairs, got {windows!r:.60}"
            )
    return labels


def unmatched_labels(labels: Mapping[str, object], names: Iterable[str]) -> str | None:
    """One warning line when label keys match no series, naming examples of both; else None."""
    names = list(names)
    known = set(names)
    unmatched = sorted(k for k in labels if k not in known)
    if not unmatched:
        return None
    return (
        f"warning: {len(unmatched)} of {len(labels)} label keys match no series, e.g. "
        f"{', '.join(repr(k) for k in unmatched[:3])}; series are named like "
        f"{', '.join(repr(n) for n in sorted(names)[:3]) or 'nothing (no series read)'}"
    )


def output_path(out: Path, name: str) -> Path:
    """Where a series' CSV goes: its name as a relative path, always ending in ``.csv``."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise BacktestInputError(f"{name}: series name cannot be used as an output path")
    for suffix in (".gz", ".parquet", ".pq", ".csv"):
        if relative.name.lower().endswith(suffix):
            relative = relative.with_name(relative.name[: -len(suffix)])
    return out / relative.with_name(relative.name + ".csv")


def write_series(out: Path, name: str, frame: pd.DataFrame, kinds: list[str]) -> Path:
    columns = ["timestamp", "value", *(f"{k}_score" for k in kinds), "ensemble_score", "is_anomaly"]
    path = output_path(out, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame[columns].to_csv(path, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    return path
