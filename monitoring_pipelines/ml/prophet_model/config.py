"""The Prophet detector's settings, with what each default was measured against."""

from dataclasses import dataclass, field
from typing import Literal

from monitoring_pipelines.ml.base import DetectorConfig
from monitoring_pipelines.ml.calibration import CalibrationConfig, tail_calibration


def _calibration() -> CalibrationConfig:
    # The causal residual z is judged like every member: the per-series tail likelihood.
    return tail_calibration()


@dataclass(frozen=True)
class ProphetConfig(DetectorConfig):
    """Prophet settings. Defaults chosen on a demo backtest (3 tenants, 72 series, 44 incidents,
    refits every 3 days): see the comments for what each choice was measured against."""

    calibration: CalibrationConfig = field(default_factory=_calibration)
    # "auto": the seasonality the training data has (daily, weekly with two weeks of data, another
    # cycle, or none); "calendar": daily and weekly as the two flags below say.
    season: Literal["auto", "calendar"] = "auto"
    daily_seasonality: bool = True
    weekly_seasonality: bool = True
    yearly_seasonality: bool = False
    daily_fourier_order: int = 8
    weekly_fourier_order: int = 3
    # Multiplicative seasonality scored worse (raw AUC 0.83 vs 0.91, twice the false alarms) and
    # fitted 3x slower.
    seasonality_mode: Literal["additive", "multiplicative"] = "additive"
    # A flat trend cannot run away between refits; a linear trend fitted on a few days of a real
    # series extrapolates into a flood of false alarms. Growth the series really
    # has reaches the residual's causal window (raw score) and the next refit.
    growth: Literal["linear", "flat"] = "flat"
    # Prophet's 0.05 lets changepoints chase slow wander, and the forecast then extrapolates it:
    # 0.01 cut the 7-day-ahead error by a quarter.
    changepoint_prior_scale: float = 0.01
    seasonality_prior_scale: float = 10.0
    n_changepoints: int = 10
    changepoint_range: float = 0.8
    # A country code for ``add_country_holidays`` ("US", "DE", ...) or a tuple of ISO dates
    # (days in UTC, like the seasonality).
    holidays: str | tuple[str, ...] | None = None
    holidays_prior_scale: float = 10.0
    interval_width: float = 0.8
    # Draws for the trend-uncertainty part of the cached bands; 0 = none (the bands and the
    # "interval" scale are then the residual spread alone). Off by default: the raw score does not
    # use them and the sampling cost most of a fit.
    uncertainty_samples: int = 0
    # How far past the training data the fit-time forecast cache reaches.
    horizon_days: float = 7.0
    # Fit on bucket means at this resolution (None: every point). Hourly means fitted 2.5x faster
    # than 15-minute ones and 10x faster than raw points, and forecast better (fewer points give
    # the trend prior more weight). Scales always come from the full-resolution residuals.
    fit_resolution: str | None = "1h"
    # ... but never fewer fit points than this: a short or one-second series (SKAB: 400 seconds of
    # training) is fitted on buckets of span / min_fit_points, or on every point.
    min_fit_points: int = 240
    # Residuals before a point that judge it (mean and spread); 0 = the fitted scale alone.
    residual_window: int = 288
    residual_min_periods: int = 24
    # With residual_window=0: "interval": residual spread combined with Prophet's trend
    # uncertainty, so scores ease off as the forecast ages; "residual": residual spread only.
    scale: Literal["residual", "interval"] = "interval"
    # Residual spread per slot of the (UTC) day; one slot for the whole day lost 0.14 of event
    # recall at the same false-alarm rate, because noise follows the daily load.
    scale_slots_per_day: int = 24
    # A slot's scale never falls below this fraction of the series' overall scale, so a quiet
    # slot with few residuals does not turn ordinary noise into alarms.
    min_scale_fraction: float = 0.25
    # Columns fitted in parallel (Stan runs in a subprocess, so threads do overlap).
    n_jobs: int = 1

    def __post_init__(self) -> None:
        if self.seasonality_mode not in ("additive", "multiplicative"):
            raise ValueError(
                f"seasonality_mode must be additive or multiplicative, got "
                f"{self.seasonality_mode!r}"
            )
        if self.growth not in ("linear", "flat"):
            raise ValueError(f"growth must be linear or flat, got {self.growth!r}")
        if self.scale not in ("residual", "interval"):
            raise ValueError(f"scale must be residual or interval, got {self.scale!r}")
        if self.uncertainty_samples < 0:
            raise ValueError("uncertainty_samples must be >= 0")
        if not 0.0 < self.interval_width < 1.0:
            raise ValueError("interval_width must be in (0, 1)")
        if self.horizon_days < 0:
            raise ValueError("horizon_days must be >= 0")
        if self.scale_slots_per_day < 1 or 86_400 % self.scale_slots_per_day:
            raise ValueError("scale_slots_per_day must be a positive divisor of 86400")
        if self.n_jobs < 1:
            raise ValueError("n_jobs must be >= 1")
        if isinstance(self.holidays, list):
            object.__setattr__(self, "holidays", tuple(self.holidays))
