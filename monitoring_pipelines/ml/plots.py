"""Review plots for model candidates: a group's values with its label windows, and the scores below.

Built on a bare ``Figure`` with the Agg canvas, never pyplot: no global figure registry to leak
memory in long-running processes, no GUI backend, and nothing to close. matplotlib is imported
inside :func:`score_plot` so importing this module stays cheap.
"""

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LabelWindows = Mapping[str, Iterable[Iterable[Any]]] | Iterable[Iterable[Any]]


def score_plot(
    frame_values: pd.Series | pd.DataFrame,
    scores: pd.Series | pd.DataFrame,
    label_windows: LabelWindows = (),
    title: str = "",
    *,
    threshold: float | None = None,
    max_series: int = 6,
) -> "Figure":
    """Values over time (top) and calibrated scores (bottom), labelled windows shaded on both.

    ``frame_values`` and ``scores`` are indexed by time (UTC). ``label_windows`` is either a list of
    ``(start, end)`` pairs or the label-window contract ``{series_name: [[start, end], ...]}``, in
    which case every series' windows are shaded. With several columns the values are standardised
    so they share one axis; at most ``max_series`` columns are drawn to keep the picture readable.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = _as_frame(frame_values).iloc[:, :max_series]
    score_frame = _as_frame(scores).iloc[:, :max_series]

    fig = Figure(figsize=(9, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_values, ax_scores = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))

    x = _naive_utc(values.index)
    _plot_values(ax_values, x, values)
    _plot_scores(ax_scores, score_frame, threshold)
    _shade_windows((ax_values, ax_scores), x, label_windows)
    if title:
        ax_values.set_title(title, fontsize="medium")
    return fig


def _plot_values(ax: Any, x: pd.DatetimeIndex, values: pd.DataFrame) -> None:
    """The values on ``ax``: one series as is, several standardised to share the axis."""
    if values.shape[1] == 1:
        ax.plot(x, values.iloc[:, 0].to_numpy(dtype="float64"), lw=0.8)
        ax.set_ylabel(str(values.columns[0]))
        return
    # Metrics of one group have unrelated units (percent, bytes, ms): standardise to compare.
    for column in values.columns:
        series = values[column].to_numpy(dtype="float64")
        std = np.nanstd(series)
        z = (series - np.nanmean(series)) / (std if std > 0 else 1.0)
        ax.plot(x, z, lw=0.8, label=str(column))
    ax.set_ylabel("value (z)")
    ax.legend(loc="upper left", fontsize="x-small", ncols=min(3, values.shape[1]))


def _plot_scores(ax: Any, score_frame: pd.DataFrame, threshold: float | None) -> None:
    """The scores on ``ax``, with the threshold as a dashed line when given."""
    xs = _naive_utc(score_frame.index)
    for column in score_frame.columns:
        label = str(column) if score_frame.shape[1] > 1 else None
        ax.plot(xs, score_frame[column].to_numpy(dtype="float64"), lw=0.8, label=label)
    if threshold is not None:
        ax.axhline(threshold, color="black", ls="--", lw=0.8, label="threshold")
    ax.set_ylabel("score")
    ax.set_xlabel("time (UTC)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize="x-small")


def _shade_windows(axes: tuple[Any, Any], x: pd.DatetimeIndex, label_windows: LabelWindows) -> None:
    """Shade on both axes each labelled window that overlaps the plotted time range."""
    ax_values = axes[0]
    start, end = (x.min(), x.max()) if len(x) else (None, None)
    for i, (w_start, w_end) in enumerate(_windows(label_windows)):
        if start is not None and (w_end < start or w_start > end):
            continue
        for ax in axes:
            ax.axvspan(
                w_start,
                w_end,
                color="tab:red",
                alpha=0.15,
                lw=0,
                label="labelled anomaly" if i == 0 and ax is ax_values else None,
            )


def _as_frame(data: pd.Series | pd.DataFrame) -> pd.DataFrame:
    frame = data.to_frame() if isinstance(data, pd.Series) else data
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise ValueError("score_plot needs data indexed by time (a DatetimeIndex)")
    return frame


def _naive_utc(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return index if index.tz is None else index.tz_convert("UTC").tz_localize(None)


def _timestamp(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts if ts.tzinfo is None else ts.tz_convert("UTC").tz_localize(None)


def _windows(label_windows: LabelWindows) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    pairs = label_windows.values() if isinstance(label_windows, Mapping) else [label_windows]
    windows = []
    for group in pairs:
        for start, end in group:
            windows.append((_timestamp(start), _timestamp(end)))
    return sorted(windows)
