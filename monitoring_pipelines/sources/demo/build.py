"""Put it together: :func:`generate` the records, labels and incidents; :func:`write_demo` writes
them as files."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from monitoring_pipelines.sources.demo.config import (
    DEFAULT_CONFIG,
    SERVICE_METRICS,
    TS_FORMAT,
    DemoConfig,
    DemoData,
)
from monitoring_pipelines.sources.demo.faults import (
    _apply_bad_rows,
    _apply_incident,
    _assemble,
    _break_partition,
    _broken,
    _place_bad_rows,
    _place_gaps,
    _round,
    _schedule,
)
from monitoring_pipelines.sources.demo.signals import _clean_tenant, _rng, _tenant_scales, _Timeline
from monitoring_pipelines.sources.records import RECORD_COLUMNS, series_name


def generate(config: DemoConfig = DEFAULT_CONFIG) -> DemoData:
    """Generate the demo records, their label windows, incidents and the bad rows to expect."""
    tl = _Timeline.from_config(config)
    scales = _tenant_scales(config)
    broken = _broken(config, tl)
    all_keys = sorted(
        (tenant, service, metric)
        for tenant in config.tenants
        for service in config.services
        for metric in SERVICE_METRICS[service]
    )
    codes_of = {key: code for code, key in enumerate(all_keys)}
    parts = []
    scheduled: list[dict] = []
    bad_rows: list[dict] = []
    for tenant_index, tenant in enumerate(config.tenants):
        series = _clean_tenant(config, tl, tenant, scales[tenant])
        keys = sorted(series)
        present = _place_gaps(config, tl, tenant, keys)
        bad = _place_bad_rows(config, tl, tenant, keys, present, broken)
        incidents = _schedule(config, tl, tenant, tenant_index, present, bad, broken)
        for incident in incidents:
            _apply_incident(series, incident, tl)
        _round(series)
        extra = _apply_bad_rows(series, bad, _rng(config.seed, tenant, "bad-values"))
        if broken is not None and broken[0] == tenant:
            _break_partition(series, present, broken, _rng(config.seed, tenant, "broken"))
        tenant_codes = {(s, m): codes_of[(tenant, s, m)] for s, m in keys}
        parts.append(_assemble(tl, series, present, extra, tenant_codes))
        scheduled.extend(incidents)
        bad_rows.extend(
            {"tenant": tenant, "service": s, "metric": m, "ts": tl.iso(i), "problem": p}
            for s, m, i, p in bad
        )
    return DemoData(
        records=_frame(parts, all_keys),
        labels=_labels(scheduled, all_keys, tl),
        incidents=_incident_list(scheduled, tl),
        bad_rows=sorted(bad_rows, key=lambda r: (r["tenant"], r["ts"], r["service"], r["metric"])),
        broken_partition=None if broken is None else (broken[0], broken[1]),
    )


def _frame(parts, all_keys) -> pd.DataFrame:
    codes = np.concatenate([p[0] for p in parts])
    ts = np.concatenate([p[1] for p in parts])
    values = np.concatenate([p[2] for p in parts])
    # Stable, so a duplicate row lands right after the row it duplicates.
    order = np.lexsort((ts, codes))
    codes, ts, values = codes[order], ts[order], values[order]
    columns = {}
    for position, column in enumerate(("tenant", "service", "metric")):
        names = np.array([key[position] for key in all_keys], dtype=object)
        columns[column] = pd.Series(names[codes]).astype(str)
    columns["ts"] = pd.Series(pd.to_datetime(ts, unit="ns", utc=True)).astype("datetime64[ns, UTC]")
    columns["value"] = pd.Series(values, dtype="float64")
    columns["tags"] = pd.Series([""] * codes.size, dtype=object).astype(str)
    return pd.DataFrame(columns)[list(RECORD_COLUMNS)]


def _labels(scheduled, all_keys, tl) -> dict[str, list[list[str]]]:
    labels: dict[str, list[list[str]]] = {series_name(*key): [] for key in all_keys}
    for incident in sorted(scheduled, key=lambda i: i["begin"]):
        window = [tl.iso(incident["begin"]), tl.iso(incident["end"] - 1)]
        for metric in incident["metrics"]:
            labels[series_name(incident["tenant"], incident["service"], metric)].append(window)
    return labels


def _incident_list(scheduled, tl) -> list[dict]:
    ordered = sorted(scheduled, key=lambda i: (i["begin"], i["tenant"]))
    return [
        {
            "id": f"inc-{number:03d}",
            "kind": incident["kind"],
            "tenant": incident["tenant"],
            "service": incident["service"],
            "metrics": list(incident["metrics"]),
            "start": tl.iso(incident["begin"]),
            "end": tl.iso(incident["end"] - 1),
        }
        for number, incident in enumerate(ordered, start=1)
    ]


def write_demo(data: DemoData, out_dir: Path, *, fmt: str = "parquet") -> dict:
    """Write one records file per tenant plus the label, incident and bad-row JSON files."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = {}
    for tenant, frame in data.records.groupby("tenant", sort=True):
        path = out_dir / f"{tenant}.{fmt}"
        frame = frame.reset_index(drop=True)
        if fmt == "parquet":
            frame.to_parquet(path, index=False)
        else:
            frame = frame.assign(ts=frame["ts"].dt.strftime(TS_FORMAT))
            frame.to_csv(path, index=False, lineterminator="\n")
        records[str(tenant)] = {"path": str(path), "rows": len(frame)}
    documents = {
        "labels": data.labels,
        "incidents": data.incidents,
        "bad_rows": data.bad_rows,
    }
    paths = {}
    for name, document in documents.items():
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        paths[name] = str(path)
    return {
        "format": fmt,
        "records": records,
        **paths,
        "rows": len(data.records),
        "series": len(data.labels),
        "label_windows": sum(len(w) for w in data.labels.values()),
        "incident_count": len(data.incidents),
        "bad_row_count": len(data.bad_rows),
        "broken_partition": list(data.broken_partition) if data.broken_partition else None,
    }
