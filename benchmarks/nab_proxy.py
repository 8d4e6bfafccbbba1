"""The single-series proxy of the held-out benchmark: every SKAB sensor alone, scored NAB-style.

The product is judged on single real production metrics, each backtested alone with
``--train-fraction 0.15 --max-train-points 750`` and one alert level for all series. This proxy
does the same on real data nobody here wrote: each of SKAB's 272 sensor series (34 experiments x
8 sensors, one-second steps) is one ``timestamp,value`` series with its experiment's label windows.

The score follows NAB's standard profile (Lavin and Ahmad 2015): inside a label window only the
first flagged point counts, worth ``A_tp x sigma(y)`` with ``y`` its relative position in the
window (-1 at the start, 0 at the end; early is worth about 1, late about 0); every flagged point
outside a window costs ``A_fp x sigma`` of how far it is from the end of the window before it (a
point right after a window costs little, one far from any window the full 0.11); a window with no
flagged point costs 1. Training steps are not scored. The sum over all series is normalised so a
detector that never fires scores 0 and a perfect one 100. ``best`` sweeps one level over all
series (what a NAB threshold optimiser does); ``decisions`` scores the backtest's own
``is_anomaly`` column at its default level.

SKAB labels a fault for as long as it lasts (half of the points), while NAB labels a window around
each onset covering 10% of the series in all, and a lasting change after it counts as outside.
``onset`` columns score the same output against windows laid out NAB's way
(:func:`onset_windows`): the harder, closer proxy of the held-out benchmark. Every member and the
reference baseline are scored undamped and ``_damped`` (after the ensemble's refractory step,
which the backtest's ``ensemble_score`` already has), so all are compared after the same
post-processing.
"""

import time
from pathlib import Path

import numpy as np
import pandas as pd

A_TP, A_FP, A_FN = 1.0, -0.11, -1.0
LEVELS = np.round(np.arange(0.05, 1.0001, 0.01), 2)


def _sigma(y: np.ndarray | float) -> np.ndarray | float:
    return 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0


def skab_series(skab: Path, every: int = 1) -> tuple[dict, dict]:
    """SKAB's sensors as ``{name: (timestamps, values)}`` and their label windows.

    ``every`` keeps every n-th experiment (a quick subset while iterating)."""
    import json

    from monitoring_pipelines.ml.backtest_io import read_inputs

    records = read_inputs(skab / "records").records_frame
    labels = json.loads((skab / "labels.json").read_text())
    services = sorted(records["service"].unique())[::every]
    series = {}
    for (service, metric), part in records[records["service"].isin(services)].groupby(
        ["service", "metric"], sort=True
    ):
        series[f"skab/{service}/{metric}"] = (part["ts"].to_numpy(), part["value"].to_numpy())
    return series, {k: v for k, v in labels.items() if k in series}


class _Prepared:
    """One series' label layout, computed once and reused for every level and column."""

    def __init__(self, frame: pd.DataFrame, windows: list):
        ts = pd.to_datetime(frame["timestamp"], utc=True).dt.tz_localize(None).to_numpy()
        self.scored = ~frame["training"].to_numpy(dtype=bool)
        n = len(ts)
        self.window_of = np.full(n, -1)
        self.rel = np.zeros(n)  # relative position inside a window, or after the last one
        self.after = np.full(n, np.nan)
        spans = []
        for w, (start, end) in enumerate(windows):
            s, e = (
                pd.to_datetime(t, utc=True).tz_localize(None).to_datetime64() for t in (start, end)
            )
            inside = (ts >= s) & (ts <= e)
            idx = np.flatnonzero(inside)
            if idx.size == 0:
                continue
            spans.append((idx[0], idx[-1]))
            self.window_of[idx] = w
            length = idx.size
            self.rel[idx] = -(idx[-1] - idx) / length - 1.0 / length
        self.n_windows = sum(1 for a, b in spans if self.scored[a : b + 1].any())
        self.window_ids = [w for w, (a, b) in enumerate(spans) if self.scored[a : b + 1].any()]
        for a, b in spans:
            length = b - a + 1
            following = np.arange(b + 1, n)
            self.after[following] = (following - b) / length
        self.outside = self.window_of < 0

    def raw(self, flagged: np.ndarray) -> float:
        flagged = flagged & self.scored
        total = 0.0
        for w in set(self.window_of[flagged & ~self.outside].tolist()):
            first = np.flatnonzero(flagged & (self.window_of == w))[0]
            total += A_TP * _sigma(self.rel[first])
        detected = len(set(self.window_of[flagged & ~self.outside].tolist()))
        total += A_FN * (self.n_windows - detected)
        fp = flagged & self.outside
        if fp.any():
            y = self.after[fp]
            weights = np.where(np.isnan(y), -1.0, _sigma(np.nan_to_num(y)))
            total += float(np.sum(-A_FP * weights))
        return total


def onset_windows(series: dict[str, pd.DataFrame], labels: dict) -> dict:
    """Each label window replaced by NAB's layout: centred on its onset, ``10% x n / windows``
    steps wide (n the series' length)."""
    out = {}
    for name, frame in series.items():
        windows = labels.get(name, [])
        if not windows:
            continue
        ts = pd.to_datetime(frame["timestamp"], utc=True)
        half = (ts.iloc[1] - ts.iloc[0]) * (0.1 * len(ts) / len(windows) / 2)
        onsets = [pd.Timestamp(start) for start, _ in windows]
        onsets = [t.tz_localize("UTC") if t.tzinfo is None else t for t in onsets]
        out[name] = [[(t - half).isoformat(), (t + half).isoformat()] for t in onsets]
    return out


def nab_scores(series: dict[str, pd.DataFrame], labels: dict, columns: list[str]) -> pd.DataFrame:
    """Per score column: the NAB-style score at the best single level and at that level."""
    prepared = {name: _Prepared(frame, labels.get(name, [])) for name, frame in series.items()}
    windows = sum(p.n_windows for p in prepared.values())
    null, perfect = A_FN * windows, A_TP * windows
    rows = {}
    for column in columns:
        best = (-np.inf, np.nan)
        for level in LEVELS:
            raw = sum(
                p.raw(np.nan_to_num(series[n][column].to_numpy(dtype="float64")) >= level)
                for n, p in prepared.items()
                if column in series[n]
            )
            best = max(best, (raw, level))
        rows[column] = {"best": 100 * (best[0] - null) / (perfect - null), "level": best[1]}
    if all("is_anomaly" in f for f in series.values()):
        raw = sum(p.raw(series[n]["is_anomaly"].to_numpy(dtype=bool)) for n, p in prepared.items())
        rows["decisions"] = {"best": 100 * (raw - null) / (perfect - null), "level": np.nan}
    return pd.DataFrame.from_dict(rows, orient="index")


def with_damped(series: dict[str, pd.DataFrame], columns: list[str]) -> list[str]:
    """Add ``<column>_damped`` beside each score column of every series: the column after the
    ensemble's refractory step (:func:`~monitoring_pipelines.ml.ensemble.refractory`), so members,
    the baseline and the ensemble are judged after the same post-processing. Returns the names."""
    from monitoring_pipelines.ml.ensemble import refractory

    for frame in series.values():
        for column in columns:
            if column in frame:
                values = frame[column].to_numpy(dtype="float64")
                frame[f"{column}_damped"] = refractory(values)
    return [f"{column}_damped" for column in columns]


def run(skab: Path, kinds: list[str], every: int = 1, baseline: bool = True) -> tuple:
    """The proxy backtest of ``kinds`` (and the pipeline's ensemble) plus the reference baseline."""
    from monitoring_pipelines.ml.backtest import run_backtest
    from monitoring_pipelines.ml.baseline import RollingZScoreBaseline
    from monitoring_pipelines.ml.catalogue import detector_class

    series, labels = skab_series(skab, every)
    options = {"train_fraction": 0.15, "max_train_points": 750, "progress": False}
    began = time.perf_counter()
    result = run_backtest(series, labels, detectors=[detector_class(k) for k in kinds], **options)
    seconds = time.perf_counter() - began
    members = [f"{k}_score" for k in kinds]
    # The backtest's ensemble_score is already damped; members are scored both ways.
    columns = members + with_damped(result.series, members) + ["ensemble_score"]
    table = _both_layouts(result.series, labels, columns)
    if baseline:
        ref = run_backtest(series, labels, detectors=[RollingZScoreBaseline], **options)
        names = ["baseline_score", *with_damped(ref.series, ["baseline_score"])]
        base = _both_layouts(ref.series, labels, names).loc[names]
        table = pd.concat([table, base])
    return table, seconds, result


def _both_layouts(series: dict, labels: dict, columns: list[str]) -> pd.DataFrame:
    onset = nab_scores(series, onset_windows(series, labels), columns).add_prefix("onset_")
    return nab_scores(series, labels, columns).join(onset)
