import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring_pipelines.settings import DEFAULT_TENANTS
from monitoring_pipelines.sources.demo import (
    BAD_ROW_PROBLEMS,
    INCIDENT_KINDS,
    SERVICE_METRICS,
    DemoConfig,
    demo_period,
    generate,
    write_demo,
)
from monitoring_pipelines.sources.records import KEY_COLUMNS, RECORD_COLUMNS, metric_kind

SMALL = DemoConfig(tenants=("acme", "globex"), days=14)
STEP = pd.Timedelta(seconds=300)


@pytest.fixture(scope="module")
def small():
    return generate(SMALL)


@pytest.fixture(scope="module")
def full():
    return generate()


def _keys(frame: pd.DataFrame) -> pd.Series:
    return frame["tenant"] + "/" + frame["service"] + "/" + frame["metric"] + "@" + _iso(frame.ts)


def _iso(ts: pd.Series) -> pd.Series:
    return ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _declared_bad(data) -> pd.Series:
    """Rows the generator says are broken: declared bad rows and the broken partition."""
    records = data.records
    declared = {f"{r['tenant']}/{r['service']}/{r['metric']}@{r['ts']}" for r in data.bad_rows}
    bad = _keys(records).isin(declared)
    if data.broken_partition:
        tenant, date = data.broken_partition
        bad |= (records.tenant == tenant) & (records.ts.dt.strftime("%Y-%m-%d") == date)
    return bad


def _windows(data) -> list[tuple[str, pd.Timestamp, pd.Timestamp]]:
    return [
        (name, pd.Timestamp(start), pd.Timestamp(end))
        for name, windows in data.labels.items()
        for start, end in windows
    ]


def _in_windows(data, frame: pd.DataFrame) -> pd.Series:
    names = frame["tenant"] + "/" + frame["service"] + "/" + frame["metric"]
    inside = pd.Series(False, index=frame.index)
    for name, start, end in _windows(data):
        inside |= (names == name) & frame.ts.between(start, end)
    return inside


def test_same_seed_gives_identical_data_and_identical_files(small, tmp_path):
    again = generate(SMALL)
    pd.testing.assert_frame_equal(small.records, again.records)
    assert small.labels == again.labels
    assert small.incidents == again.incidents
    assert small.bad_rows == again.bad_rows
    assert small.broken_partition == again.broken_partition
    for fmt in ("parquet", "csv"):
        first = write_demo(small, tmp_path / f"a-{fmt}", fmt=fmt)
        second = write_demo(again, tmp_path / f"b-{fmt}", fmt=fmt)
        for tenant, written in first["records"].items():
            other = second["records"][tenant]["path"]
            assert Path(written["path"]).read_bytes() == Path(other).read_bytes()
        for name in ("labels", "incidents", "bad_rows"):
            assert Path(first[name]).read_bytes() == Path(second[name]).read_bytes()


def test_a_different_seed_gives_different_values_and_incidents(small):
    other = generate(replace(SMALL, seed=7))
    common = small.records.merge(other.records, on=list(KEY_COLUMNS)).drop_duplicates(
        list(KEY_COLUMNS)
    )
    assert (common.value_x != common.value_y).mean() > 0.9
    assert small.incidents != other.incidents


def test_records_have_the_contract_columns_and_are_sorted(small):
    records = small.records
    assert tuple(records.columns) == RECORD_COLUMNS
    assert str(records.ts.dtype) == "datetime64[ns, UTC]"
    assert records.value.dtype == np.float64
    assert (records.tags == "").all()
    ordered = records.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(records, ordered)


def test_every_tenant_has_every_service_with_eight_metrics(small):
    records = small.records
    assert set(records.tenant) == set(SMALL.tenants)
    for (tenant, service), group in records.groupby(["tenant", "service"]):
        assert set(group.metric) == set(SERVICE_METRICS[service]), (tenant, service)
    assert set(records.service) == set(SERVICE_METRICS)
    assert all(len(metrics) == 8 for metrics in SERVICE_METRICS.values())
    assert all(len(set(metrics)) == 8 for metrics in SERVICE_METRICS.values())
    assert records.groupby(["tenant", "service", "metric"]).ngroups == 2 * 3 * 8
    assert len(small.labels) == 2 * 3 * 8


def test_samples_are_on_a_regular_300_second_grid_apart_from_gaps(small):
    start = pd.Timestamp(SMALL.start)
    end = start + pd.Timedelta(days=SMALL.days)
    records = small.records.drop_duplicates(list(KEY_COLUMNS))
    assert records.ts.min() == start
    assert records.ts.max() == end - STEP
    assert ((records.ts - start) % STEP == pd.Timedelta(0)).all()
    steps = records.groupby(["tenant", "service", "metric"]).ts.diff().dropna()
    assert (steps >= STEP).all()
    assert (steps == STEP).mean() > 0.99


def test_values_respect_physical_bounds_except_declared_bad_rows(small):
    records = small.records
    good = records[~_declared_bad(small)]
    assert np.isfinite(good.value).all()
    for metric, group in good.groupby("metric"):
        kind = metric_kind(metric)
        if kind.lower is not None:
            assert group.value.min() >= kind.lower, metric
        if kind.upper is not None:
            assert group.value.max() <= kind.upper, metric
    assert not good.duplicated(list(KEY_COLUMNS)).any()
    counts = good[good.metric.isin(["streams_started", "auth_failures"])].value
    assert (counts == counts.round()).all()


def test_p95_latency_is_never_below_p50(small):
    good = small.records[~_declared_bad(small)]
    for p50, p95 in (
        ("latency_p50_ms", "latency_p95_ms"),
        ("startup_latency_p50_ms", "startup_latency_p95_ms"),
    ):
        pair = good[good.metric == p50].merge(
            good[good.metric == p95], on=["tenant", "service", "ts"], suffixes=("_50", "_95")
        )
        assert len(pair) > 1000
        assert (pair.value_95 >= pair.value_50).all()


def test_traffic_peaks_in_the_evening_and_differs_at_weekends(small):
    records = small.records[~_declared_bad(small)]
    for tenant in SMALL.tenants:
        rps = records[
            (records.tenant == tenant)
            & (records.service == "api")
            & (records.metric == "requests_per_second")
        ]
        hour = rps.ts.dt.hour
        evening = rps[hour.between(18, 22)].value.mean()
        early = rps[hour.between(2, 5)].value.mean()
        assert evening > 2.0 * early, tenant
        weekend = rps.ts.dt.day_of_week >= 5
        afternoon = hour.between(11, 16)
        ratio = rps[weekend & afternoon].value.mean() / rps[~weekend & afternoon].value.mean()
        assert ratio > 1.1, tenant


def test_tenants_differ_in_traffic_by_up_to_ten_times():
    data = generate(DemoConfig(days=7, bad_rows=False, broken_partition=False))
    rps = data.records[
        (data.records.service == "api") & (data.records.metric == "requests_per_second")
    ]
    means = rps.groupby("tenant").value.mean()
    assert set(means.index) == set(DEFAULT_TENANTS)
    assert 6.0 < means.max() / means.min() < 14.0


def test_cpu_latency_and_errors_follow_traffic():
    config = DemoConfig(
        tenants=("acme",), days=7, incidents=False, bad_rows=False, broken_partition=False
    )
    data = generate(config)
    api = data.records[data.records.service == "api"].pivot_table(
        index="ts", columns="metric", values="value"
    )
    assert api.requests_per_second.corr(api.cpu_percent) > 0.9
    assert api.requests_per_second.corr(api.latency_p95_ms) > 0.4
    busy = api.requests_per_second > api.requests_per_second.quantile(0.9)
    quiet = api.requests_per_second < api.requests_per_second.quantile(0.1)
    assert api.error_rate[busy].mean() > 1.5 * api.error_rate[quiet].mean()


def test_default_config_has_every_incident_kind_for_every_tenant(full):
    data = full
    records = data.records
    assert 1_150_000 < len(records) < 1_210_000
    assert set(records.tenant) == set(DEFAULT_TENANTS)
    assert records.ts.min() == pd.Timestamp("2026-09-28T00:00:00Z")
    assert records.ts.max() == pd.Timestamp("2026-11-01T23:55:00Z")
    incidents = pd.DataFrame(data.incidents)
    assert set(incidents.kind) == set(INCIDENT_KINDS)
    assert set(incidents.tenant) == set(DEFAULT_TENANTS)
    assert incidents.id.is_unique
    start = pd.Timestamp("2026-09-28T00:00:00Z")
    week = (pd.to_datetime(incidents.start) - start) // pd.Timedelta(days=7)
    per_tenant_week = incidents.groupby([incidents.tenant, week]).size()
    assert len(per_tenant_week) == 5 * 5
    assert per_tenant_week.between(1, 4).all()
    for _, group in incidents.groupby("tenant"):
        assert group.kind.nunique() == len(INCIDENT_KINDS)
    assert data.broken_partition == ("initech", "2026-10-08")


def test_incidents_never_overlap_within_a_series(full):
    data = full
    for name, windows in data.labels.items():
        spans = sorted((pd.Timestamp(s), pd.Timestamp(e)) for s, e in windows)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end < start, name


def test_label_windows_follow_the_contract_and_match_the_incidents(small, tmp_path):
    manifest = write_demo(small, tmp_path)
    labels = json.loads(Path(manifest["labels"]).read_text())
    assert labels == small.labels
    incidents = json.loads(Path(manifest["incidents"]).read_text())
    assert incidents == small.incidents
    assert all(name.count("/") == 2 for name in labels)
    for windows in labels.values():
        for window in windows:
            assert isinstance(window, list) and len(window) == 2
            start, end = window
            assert start.endswith("Z") and end.endswith("Z")
            assert pd.Timestamp(start).tzinfo is not None
            assert pd.Timestamp(start) <= pd.Timestamp(end)
    assert {"id", "kind", "tenant", "service", "metrics", "start", "end"} <= set(incidents[0])
    for incident in incidents:
        assert incident["metrics"]
        for metric in incident["metrics"]:
            name = f"{incident['tenant']}/{incident['service']}/{metric}"
            assert [incident["start"], incident["end"]] in labels[name]
    labelled = sum(len(w) for w in labels.values())
    assert labelled == sum(len(i["metrics"]) for i in incidents)


def test_incidents_change_only_rows_inside_their_label_windows(small):
    clean = generate(replace(SMALL, incidents=False))
    assert clean.incidents == [] and all(w == [] for w in clean.labels.values())
    with_incidents, without = small.records, clean.records
    pd.testing.assert_frame_equal(with_incidents[list(KEY_COLUMNS)], without[list(KEY_COLUMNS)])
    same = (with_incidents.value == without.value) | (
        with_incidents.value.isna() & without.value.isna()
    )
    changed = with_incidents[~same]
    assert len(changed) > 100
    assert _in_windows(small, changed).all()
    inside = with_incidents[_in_windows(small, with_incidents)]
    assert (~same[inside.index]).mean() > 0.95


def test_spikes_and_dips_stand_out_from_the_local_noise(full):
    data = full
    records = data.records.set_index(["tenant", "service", "metric"]).sort_index()
    checked = 0
    for incident in data.incidents:
        if incident["kind"] not in ("spike", "dip"):
            continue
        metric = incident["metrics"][-1]
        series = records.loc[(incident["tenant"], incident["service"], metric)]
        start, end = pd.Timestamp(incident["start"]), pd.Timestamp(incident["end"])
        before = series[series.ts.between(start - pd.Timedelta(hours=6), start - STEP)].value
        during = series[series.ts.between(start, end)].value
        sigma = 1.4826 * (before.diff() - before.diff().median()).abs().median() / np.sqrt(2)
        deviation = (during - before.iloc[-12:].median()).abs().max()
        assert deviation > 4 * sigma, incident
        checked += 1
    assert checked >= 10


def test_flatlines_repeat_one_value_for_at_least_an_hour(full):
    data = full
    records = data.records.set_index(["tenant", "service", "metric"]).sort_index()
    flatlines = [i for i in data.incidents if i["kind"] == "flatline"]
    assert flatlines
    for incident in flatlines:
        series = records.loc[(incident["tenant"], incident["service"], incident["metrics"][0])]
        start, end = pd.Timestamp(incident["start"]), pd.Timestamp(incident["end"])
        during = series[series.ts.between(start, end)].value
        assert end - start >= pd.Timedelta(minutes=55)
        assert during.nunique() == 1


def test_gaps_are_absent_rows_of_fifteen_minutes_to_a_few_hours(small):
    assert not small.records[~_declared_bad(small)].value.isna().any()
    records = small.records.drop_duplicates(list(KEY_COLUMNS))
    steps = records.groupby(["tenant", "service", "metric"]).ts.diff().dropna()
    holes = steps[steps > STEP] - STEP
    assert len(holes) >= 4
    assert holes.min() >= pd.Timedelta(minutes=15)
    assert holes.max() <= pd.Timedelta(hours=6)
    gapless = generate(replace(SMALL, gaps=False, bad_rows=False, broken_partition=False))
    assert len(gapless.records) == 2 * 24 * 14 * 288


def test_declared_bad_rows_are_in_the_records_and_outside_incidents(small):
    records = small.records
    assert len(small.bad_rows) == 2 * sum(count for _, count in BAD_ROW_PROBLEMS)
    assert {r["problem"] for r in small.bad_rows} == {p for p, _ in BAD_ROW_PROBLEMS}
    for row in small.bad_rows:
        assert set(row) == {"tenant", "service", "metric", "ts", "problem"}
        match = records[
            (records.tenant == row["tenant"])
            & (records.service == row["service"])
            & (records.metric == row["metric"])
            & (records.ts == pd.Timestamp(row["ts"]))
        ].value
        problem = row["problem"]
        if problem == "negative_latency":
            assert len(match) == 1 and match.iloc[0] < 0
        elif problem == "ratio_above_one":
            assert len(match) == 1 and match.iloc[0] > 1
        elif problem == "nan":
            assert len(match) == 1 and np.isnan(match.iloc[0])
        elif problem == "inf":
            assert len(match) == 1 and match.iloc[0] == np.inf
        elif problem == "duplicate":
            assert len(match) == 2 and match.iloc[0] == match.iloc[1]
        else:
            assert len(match) == 2 and match.iloc[0] != match.iloc[1]
        name = f"{row['tenant']}/{row['service']}/{row['metric']}"
        ts = pd.Timestamp(row["ts"])
        assert not any(n == name and s <= ts <= e for n, s, e in _windows(small))
    clean = generate(replace(SMALL, bad_rows=False, broken_partition=False))
    assert clean.bad_rows == [] and clean.broken_partition is None
    assert np.isfinite(clean.records.value).all()
    assert not clean.records.duplicated(list(KEY_COLUMNS)).any()


def test_broken_partition_has_about_a_third_garbage_and_no_incident(small):
    tenant, date = small.broken_partition
    records = small.records
    day = records[(records.tenant == tenant) & (records.ts.dt.strftime("%Y-%m-%d") == date)]
    assert len(day) > 20 * 288
    lower = day.metric.map(lambda m: metric_kind(m).lower).astype(float).fillna(-np.inf)
    upper = day.metric.map(lambda m: metric_kind(m).upper).astype(float).fillna(np.inf)
    outside = (day.value < lower) | (day.value > upper)
    assert 0.2 < outside.mean() < 0.4
    assert not any(row["tenant"] == tenant and row["ts"].startswith(date) for row in small.bad_rows)
    assert not any(
        i["tenant"] == tenant and date in (i["start"][:10], i["end"][:10]) for i in small.incidents
    )


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_write_demo_round_trips_every_tenant(small, tmp_path, fmt):
    manifest = write_demo(small, tmp_path, fmt=fmt)
    assert manifest["format"] == fmt
    assert manifest["rows"] == len(small.records)
    assert manifest["bad_row_count"] == len(small.bad_rows)
    assert manifest["broken_partition"] == list(small.broken_partition)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{t}.{fmt}" for t in SMALL.tenants] + ["bad_rows.json", "incidents.json", "labels.json"]
    )
    assert json.loads(Path(manifest["bad_rows"]).read_text()) == small.bad_rows
    for tenant, written in manifest["records"].items():
        expected = small.records[small.records.tenant == tenant].reset_index(drop=True)
        assert written["rows"] == len(expected)
        if fmt == "parquet":
            back = pd.read_parquet(written["path"])
            assert str(back.ts.dtype) == "datetime64[ns, UTC]"
        else:
            raw = pd.read_csv(written["path"], dtype={"tags": str}, keep_default_na=False)
            assert raw.ts.str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$").all()
            back = pd.read_csv(written["path"], dtype={"tags": str})
            back["tags"] = back["tags"].fillna("")
            back["ts"] = pd.to_datetime(back["ts"], utc=True).astype("datetime64[ns, UTC]")
        assert tuple(back.columns) == RECORD_COLUMNS
        pd.testing.assert_frame_equal(back, expected, check_dtype=False)


def test_the_default_period_is_the_35_days_that_end_yesterday():
    from datetime import date

    assert demo_period(date(2026, 12, 7)) == (date(2026, 11, 2), date(2026, 12, 6))
    assert demo_period(date(2026, 12, 7), days=3) == (date(2026, 12, 4), date(2026, 12, 6))
    assert demo_period(date(2026, 12, 7), start=date(2026, 9, 28), days=3) == (
        date(2026, 9, 28),
        date(2026, 9, 30),
    )
    assert demo_period(date(2026, 12, 7), end=date(2026, 11, 1)) == (
        date(2026, 9, 28),
        date(2026, 11, 1),
    )
    with pytest.raises(ValueError, match="at most two"):
        demo_period(date(2026, 12, 7), start=date(2026, 9, 28), end=date(2026, 10, 1), days=4)
    with pytest.raises(ValueError, match="ends"):
        demo_period(date(2026, 12, 7), start=date(2026, 10, 2), end=date(2026, 10, 1))


def test_a_pinned_period_gives_the_same_data_whatever_the_day_it_runs(small):
    # The demo's default config is the pinned period 2026-09-28 + 35 days; a period given by
    # its first and last day is the same config, so the same records and labels.
    from datetime import date

    start, end = demo_period(date(2027, 6, 1), start=date(2026, 9, 28), end=date(2026, 10, 11))
    pinned = replace(SMALL, start=f"{start}T00:00:00Z", days=(end - start).days + 1)
    assert pinned == SMALL
    again = generate(pinned)
    pd.testing.assert_frame_equal(again.records, small.records)
    assert again.labels == small.labels
