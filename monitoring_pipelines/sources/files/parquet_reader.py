"""Parquet files read batch by batch, their columns checked for types the records can hold."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from monitoring_pipelines.sources.files.layout import Layout, read_layout
from monitoring_pipelines.sources.files.rows import Problems, parse_rows
from monitoring_pipelines.sources.files.text import InputFileError, raw_json, short


def read_parquet(path: Path, source: str, root: Path | None, chunk_rows: int):
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputFileError(source, f"not a valid Parquet file ({short(exc)})") from None
    rows_read = 0
    with parquet:
        layout = read_layout(list(parquet.schema_arrow.names), path, root, source)
        _check_parquet_types(parquet.schema_arrow, layout, source)
        batches = parquet.iter_batches(batch_size=chunk_rows)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:
                raise InputFileError(
                    source,
                    f"corrupt Parquet data after data row {rows_read} ({short(exc)})",
                ) from None
            if batch.num_rows == 0:
                continue
            frame = _parquet_frame(batch, layout)
            rows = np.arange(rows_read + 1, rows_read + len(frame) + 1, dtype=np.int64)
            rows_read += len(frame)

            def received(i: int, position: int, frame: pd.DataFrame = frame) -> object:
                return frame.iat[i, position]

            def raw(i: int, frame: pd.DataFrame = frame) -> str:
                return raw_json(dict(zip(layout.names, frame.iloc[i].tolist(), strict=True)))

            yield parse_rows(frame, layout, rows, source, Problems(len(frame)), received, raw)


def _check_parquet_types(schema: pa.Schema, layout: Layout, source: str) -> None:
    for position, field in enumerate(schema):
        kind = field.type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        role = layout.label(position)
        if role == "ts":
            ok = _is_text(kind) or _is_number(kind) or pa.types.is_temporal(kind)
            ok = ok and not pa.types.is_time(kind) and not pa.types.is_duration(kind)
        elif role == "value":
            ok = _is_text(kind) or _is_number(kind) or pa.types.is_boolean(kind)
        elif role == "tags":
            ok = _is_text(kind)
        else:
            ok = not pa.types.is_nested(kind)
        if not ok:
            raise InputFileError(source, f"column {role} has unsupported Parquet type {kind}")


def _exact_integers(kind: pa.DataType) -> pd.ArrowDtype | None:
    # numpy would turn an integer column with nulls into float64, so epochs and values as
    # received would read 1e+17.
    return pd.ArrowDtype(kind) if pa.types.is_integer(kind) else None


def _is_text(kind: pa.DataType) -> bool:
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_null(kind)
    )


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def _parquet_frame(batch: pa.RecordBatch, layout: Layout) -> pd.DataFrame:
    """The batch as pandas: names and tags as text, ts and value kept in their own types."""
    columns = {}
    for position, column in enumerate(batch.columns):
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        kind = column.type
        role = layout.label(position)
        if role == "ts" and (pa.types.is_date(kind) or pa.types.is_null(kind)):
            column = pc.cast(column, pa.timestamp("s") if pa.types.is_date(kind) else pa.string())
        elif role == "value" and (pa.types.is_decimal(kind) or pa.types.is_boolean(kind)):
            column = pc.cast(column, pa.float64())
        elif pa.types.is_null(kind) or (role not in ("ts", "value") and not _is_text(kind)):
            column = pc.cast(column, pa.string())
        columns[f"c{position}"] = column.to_pandas(types_mapper=_exact_integers)
    return pd.DataFrame(columns)
