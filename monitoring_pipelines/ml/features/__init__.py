"""Scale-free, causal features of a group frame, vectorised over all its metrics at once.

Isolation Forest did better on trailing-window z-scores of the value and of its first difference
than on raw levels: z-scores make metrics of very different scales comparable, so
one model can pool every metric of a group. Every feature at ``t`` uses rows up to ``t`` only:
trailing windows, baselines lagged so a point never defines its own baseline, and no statistic
computed over the whole frame. That is what makes scoring a prefix give exactly the scores of the
whole (a statistic over the whole frame would let the future into the past), which the tests check.

Per point (time ``t``, metric ``j``), by name:

- ``z_value``: the value against the trailing-day median and robust scale of that metric.
- ``z_diff``: the first difference against the trailing-day scale of differences (their centre
  is ~0 on a regular grid).
- ``volatility``: log of the spread of the last few differences over their trailing-day scale.
- ``seasonal_z``: the *seasonal residual* (value minus the median of the same time 1, 2 and 3 weeks
  earlier; days earlier while there are fewer than two such weeks), re-centred on its trailing-day
  median, averaged over the last 3 steps and divided by its usual size *at that time of day* over
  the past week. Metrics swing far more at the evening peak than at night, and a plain trailing
  z-score flags every peak (and every nightly restart) of a busy series.
  In a group with a traffic metric (``FeatureConfig.load_metrics``), the residual of every other
  metric is first taken net of what the service's load explains (a causal rolling regression on
  the traffic's relative residual): a busier evening than the same evening of past weeks moves
  latencies, errors and cpu together, and was the commonest false alarm on the demo. A moderate
  traffic anomaly that the other metrics do *not* follow can show up on them instead (a traffic
  drop of 15% with cpu unmoved does); large ones are beyond ``load_trust`` and explain nothing.
- ``step_z<k>``: the change of the seasonal residual's mean over the last ``k`` steps against the
  ``k`` steps before, in units of its step-to-step noise: spikes, dips, level shifts and the
  onset of most incidents, whatever the time of day.
- ``flat``: how far below its usual step-to-step noise the series has moved over the last
  ``flat_window`` steps (a frozen exporter, a stuck gauge); 0 when it moves normally.
- ``burst``: how far above the usual spread *at that time of the week* the last ``burst_window``
  differences are; 0 when not above.
- ``tod_sin``/``tod_cos``/``dow_sin``/``dow_cos``: time of day and day of week (UTC).
- ``context_mean``/``context_max``: mean and max ``|seasonal_z|`` of the *other* metrics of the
  group at ``t``, so a model can see incidents that move several metrics a little each.

Trailing quantiles are evaluated on a strided sample of the window (every ``stride``-th step,
aligned to absolute time so a prefix and the whole see the same sample): a day of 5-minute steps
still gives 48 points, at a sixth of the cost, and the demo's validation figures did not move.
Centres and scales are medians and interquartile ranges: an incident inside the trailing day does
not inflate the scale that judges the next one. Gaps stay NaN in every per-metric feature; a gap
inside a window just means fewer points.
"""

from monitoring_pipelines.ml.features.cache import (
    clear_cache,
    compute_features,
    group_features,
    trailing_z,
)
from monitoring_pipelines.ml.features.config import FeatureConfig
from monitoring_pipelines.ml.features.season import resolve_season
from monitoring_pipelines.ml.features.windows import (
    context,
    nan_median,
    rolling_mean,
    rolling_quantiles,
    time_features,
    trailing_quantiles,
)

__all__ = [
    "FeatureConfig",
    "clear_cache",
    "compute_features",
    "context",
    "group_features",
    "nan_median",
    "resolve_season",
    "rolling_mean",
    "rolling_quantiles",
    "time_features",
    "trailing_quantiles",
    "trailing_z",
]
