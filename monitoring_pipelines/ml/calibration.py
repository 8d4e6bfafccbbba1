"""Causal, per-series calibration of raw anomaly scores into [0, 1].

Raw scores drift after training (a forecaster's residuals beyond 3 sigma were ~10x more frequent
after its training period than inside it), so a fixed cut on raw scores floods or starves. Each
point asks instead: how unusual is the *recent* mean of raw scores against this series' own
*long-run* distribution of raw scores, computed from the past only? The answer is a number of
*decades* ``L`` (the point is about a one-in-10^L event), mapped to a score by ``mapping``:

    "linear":  score = min(1, L / decades)     1.0 at one-in-10^decades and anything rarer
    "soft":    score = L / (L + decades)       0.5 at one-in-10^decades, never quite 1

Methods (:class:`CalibrationConfig.method`):

- ``"tail"`` (the default, with the soft mapping over 4 decades): ``s`` is the mean of the last
  ``short_window`` raw scores; ``q_lo`` and ``q_hi`` are quantiles (0.9, 0.99 by default) of ``s``
  over the ``long_window`` steps before it; an exponential tail through them gives
  ``L = -log10(1 - hi) + (s - q_hi) / (q_hi - q_lo)``. Raw scores of real detectors are heavy
  tailed (isolation depths, |z|, forecast errors): a Gaussian fit puts ordinary weekly extremes
  at 10^-8 and beyond, which the linear mapping saturates at 1.0, so every series looks certain
  at its busiest hour and thresholds lose all resolution at the top. Quantiles of the series'
  own recent past assume no shape, and an exponential tail beyond them keeps ranking new
  extremes instead of saturating the way a plain expanding rank does. On the demo's validation
  week it lifted the LSTM member's event F1 from 0.37 to 0.78 and left Prophet's about level
  (0.65 -> 0.67), and every member of an ensemble is then on the same scale.
- ``"gaussian"`` (the first version of this module; what calibrators saved before there were
  methods load as): the anomaly likelihood ``z = (s - mu) / sigma`` against the mean and standard
  deviation of raw scores over the long window, ``L = -log10 P(Z >= z)``, linear mapping over 8
  decades, a one-week window: ``CalibrationConfig(method="gaussian", long_window=2016,
  decades=8.0, mapping="linear")``.
- ``"identity"``: the raw score already *is* ``L`` (a detector that calibrates its own parts,
  such as the z-score detector); only the short mean and the mapping apply.

The long-run window starts from the training scores (so scoring can begin right after fit) and then
follows the series. Tail quantiles are taken on every ``stride``-th step, aligned to absolute time,
so a prefix is scored exactly like the whole.
"""

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

METHODS = ("gaussian", "tail", "identity")
MAPPINGS = ("linear", "soft")


@dataclass(frozen=True)
class CalibrationConfig:
    method: str = "tail"
    short_window: int = 3
    long_window: int = 4032  # two weeks of 5-minute steps
    min_history: int = 288
    decades: float = 4.0
    mapping: str = "soft"
    tail_quantiles: tuple[float, float] = (0.9, 0.99)
    stride: int = 6
    # The tail spread (q_hi - q_lo) never falls below this fraction of q_hi, nor below
    # min_spread, so a perfectly quiet history does not turn the first wiggle into a certainty.
    min_spread_fraction: float = 0.05
    min_spread: float = 1e-9
    # Gaussian method: sigma never falls below this fraction of the long-run mean.
    min_sigma_fraction: float = 0.05
    # Tail method: False judges every point against the training scores alone (process
    # monitoring's fixed control limits) instead of a long-run window that follows the series.
    # A fault that lasts (SKAB's run for minutes) then stays surprising instead of becoming the
    # calibrator's new normal; drift is not forgiven either, so only for detectors whose raw
    # score is judged against a fixed state on purpose.
    follow: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"calibration method must be one of {METHODS}, got {self.method!r}")
        if self.mapping not in MAPPINGS:
            raise ValueError(f"calibration mapping must be one of {MAPPINGS}, got {self.mapping!r}")
        low, high = (float(q) for q in self.tail_quantiles)
        if not 0.0 < low < high < 1.0:
            raise ValueError("tail_quantiles must be (low, high) with 0 < low < high < 1")
        object.__setattr__(self, "tail_quantiles", (low, high))


def tail_calibration(short_window: int = 3, **overrides: Any) -> CalibrationConfig:
    """The tail method over two weeks with the soft mapping: 0.5 at a one-in-10,000 event."""
    settings = {
        "method": "tail",
        "short_window": short_window,
        "long_window": 4032,
        "decades": 4.0,
        "mapping": "soft",
        **overrides,
    }
    return CalibrationConfig(**settings)


def to_score(decades: np.ndarray, scale: float, mapping: str = "soft") -> np.ndarray:
    """Map decades of surprise (>= 0) to [0, 1]; ``scale`` decades give 0.5 (soft) or 1 (linear)."""
    decades = np.maximum(decades, 0.0)
    if mapping == "linear":
        return np.minimum(decades / scale, 1.0)
    return decades / (decades + scale)


def _anchor_mask(index: pd.DatetimeIndex, stride: int) -> np.ndarray:
    if stride <= 1 or len(index) < 2:
        return np.ones(len(index), dtype=bool)
    ns = index.as_unit("ns").asi8
    step_ns = int(ns[1] - ns[0])
    return (ns // step_ns) % stride == 0


class LikelihoodCalibrator:
    def __init__(self, config: CalibrationConfig | None = None):
        self.config = config or CalibrationConfig()
        # Per column: the tail of training scores that seeds the long-run window (raw scores for
        # "gaussian", short means sampled every ``stride`` steps for "tail").
        self.history: dict[str, list[float]] = {}

    # -- fitting -----------------------------------------------------------------------------------

    def fit(self, raw: pd.DataFrame) -> "LikelihoodCalibrator":
        cfg = self.config
        if cfg.method == "identity":
            self.history = {}
        elif cfg.method == "gaussian":
            keep = cfg.long_window + cfg.short_window
            # Unrounded, exactly as before there were methods: saved models score the same.
            self.history = {
                str(col): [float(v) for v in raw[col].dropna().to_numpy()[-keep:]] for col in raw
            }
        else:
            sample = self._tail_sample(raw)
            keep = max(1, cfg.long_window // max(1, cfg.stride))
            self.history = {
                str(col): _rounded(values[~np.isnan(values)][-keep:])
                for col, values in sample.items()
            }
        return self

    def _short(self, raw: pd.DataFrame) -> pd.DataFrame:
        from monitoring_pipelines.ml.features import rolling_mean

        values = rolling_mean(raw.to_numpy(dtype="float64"), self.config.short_window)
        return pd.DataFrame(values, index=raw.index, columns=raw.columns)

    def _tail_sample(self, raw: pd.DataFrame) -> dict[str, np.ndarray]:
        short = self._short(raw.astype("float64"))
        mask = _anchor_mask(pd.DatetimeIndex(raw.index), self.config.stride)
        return {str(col): short[col].to_numpy()[mask] for col in raw.columns}

    # -- scoring -----------------------------------------------------------------------------------

    def transform(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Calibrated scores in [0, 1], same shape as ``raw``; NaN where raw is NaN."""
        decades = self.decades(raw)
        return pd.DataFrame(
            to_score(decades.to_numpy(), self.config.decades, self.config.mapping),
            index=raw.index,
            columns=raw.columns,
        )

    def decades(self, raw: pd.DataFrame) -> pd.DataFrame:
        """``L`` per point: the point is about a one-in-10^L event for its series."""
        raw = raw.astype("float64")
        if self.config.method == "identity":
            out = self._short(raw).to_numpy()
        elif self.config.method == "gaussian":
            out = self._gaussian_all(raw)
        else:
            out = self._tail(raw)
        out = np.where(np.isnan(raw.to_numpy()), np.nan, np.maximum(out, 0.0))
        return pd.DataFrame(out.reshape(raw.shape), index=raw.index, columns=raw.columns)

    def _seeded(self, columns, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each column's seed followed by ``values``' column, as one matrix, and the seed sizes.

        Seeds differ in length, so shorter ones are padded with NaN at the front: rolling
        windows skip NaN, and a window reaching into the padding holds exactly the samples it
        would hold in that column alone, so every column's statistics are unchanged.
        """
        seeds = [np.asarray(self.history.get(str(c), []), dtype="float64") for c in columns]
        sizes = np.array([seed.size for seed in seeds], dtype=np.int64)
        width = int(sizes.max()) if len(sizes) else 0
        head = np.full((width, values.shape[1]), np.nan)
        for j, seed in enumerate(seeds):
            if seed.size:
                head[width - seed.size :, j] = seed
        return np.concatenate([head, values]), sizes

    def _tail(self, raw: pd.DataFrame) -> np.ndarray:
        from monitoring_pipelines.ml.features import rolling_quantiles

        cfg = self.config
        stride = max(1, cfg.stride)
        low, high = cfg.tail_quantiles
        index = pd.DatetimeIndex(raw.index)
        short = self._short(raw).to_numpy()
        where = np.flatnonzero(_anchor_mask(index, stride))
        # Row t may use anchors up to t - short_window: the recent mean is judged against what
        # came before it, not against itself.
        latest = np.searchsorted(where, np.arange(len(index)) - cfg.short_window, side="right") - 1
        if not cfg.follow:
            # Only the training seed: every row reads the same window, the seed's last one.
            where = where[:0]
            latest = np.full(len(index), -1)
        sample, sizes = self._seeded(raw.columns, short[where])
        width = sample.shape[0] - len(where)
        position = latest + width  # (rows,), in the padded sample
        valid = (latest[:, None] + sizes[None, :]) >= 0  # (rows, columns)
        out = np.full(raw.shape, np.nan)
        used = np.unique(position[valid.any(axis=1)]) if len(position) else position
        if not len(used):
            return out
        q_low, q_high = rolling_quantiles(
            sample,
            max(1, cfg.long_window // stride),
            max(1, cfg.min_history // stride),
            (low, high),
            positions=used,
        )
        rows = np.searchsorted(used, np.clip(position, used[0], used[-1]))
        lo = np.where(valid, q_low[rows], np.nan)
        hi = np.where(valid, q_high[rows], np.nan)
        spread = np.maximum(
            hi - lo, np.maximum(np.abs(hi) * cfg.min_spread_fraction, cfg.min_spread)
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:] = -np.log10(1.0 - high) + (short - hi) / spread
        return out

    def _gaussian_all(self, raw: pd.DataFrame) -> np.ndarray:
        """The Gaussian method on every column at once (one rolling call, not one per column)."""
        cfg = self.config
        series, _ = self._seeded(raw.columns, raw.to_numpy(dtype="float64"))
        width = series.shape[0] - raw.shape[0]
        frame = pd.DataFrame(series)
        # Gaps do not count as observations: rolling statistics skip NaN.
        short = frame.rolling(cfg.short_window, min_periods=1).mean()
        past = frame.shift(cfg.short_window).rolling(cfg.long_window, min_periods=cfg.min_history)
        mu, sigma = past.mean(), past.std()
        floor = np.maximum(np.abs(mu) * cfg.min_sigma_fraction, 1e-9)
        sigma = np.maximum(sigma, floor)
        z = ((short - mu) / sigma).to_numpy()[width:]
        # scipy costs ~0.4 s to import; the Dagster code location imports this module.
        from scipy.special import log_ndtr

        return -log_ndtr(-z) / np.log(10.0)

    # -- persistence -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "history": self.history}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LikelihoodCalibrator":
        known = {f.name for f in fields(CalibrationConfig)}
        settings = {k: v for k, v in data["config"].items() if k in known}
        if "method" not in settings:
            # Saved before there were methods: the original Gaussian likelihood, exactly.
            settings = {"long_window": 2016, "decades": 8.0, **settings}
            settings.update(method="gaussian", mapping="linear")
        settings.setdefault("mapping", "linear" if settings["method"] == "gaussian" else "soft")
        if "tail_quantiles" in settings:
            settings["tail_quantiles"] = tuple(settings["tail_quantiles"])
        calibrator = cls(CalibrationConfig(**settings))
        calibrator.history = {k: list(v) for k, v in data["history"].items()}
        return calibrator


def _rounded(values: np.ndarray) -> list[float]:
    """Seven significant digits are plenty for quantiles and keep detector.json small."""
    return [float(f"{v:.7g}") for v in np.asarray(values, dtype="float64")]
