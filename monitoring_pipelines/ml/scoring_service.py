"""One use case, score days: a tenant's days scored with its champions, written to
``anomaly_scores``, its challengers scored beside them in shadow (``shadow_scores``, never paged),
and each challenger that has shadowed long enough put through the promotion gate. The
``anomaly_scores`` asset, the CLI and the benchmarks call these functions; nothing here knows
Dagster.
"""

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from monitoring_pipelines.ml.catalogue import CATALOGUE, KINDS
from monitoring_pipelines.ml.ensemble import DEFAULT_COMBINER, CombinerConfig, combine_groups
from monitoring_pipelines.ml.frames import group_frames
from monitoring_pipelines.ml.incremental import WarehouseStateStore
from monitoring_pipelines.ml.lookback import Carried, score_carried
from monitoring_pipelines.ml.thresholds import DEFAULT_THRESHOLD, AlertPolicy
from monitoring_pipelines.ml.training import per_series, slice_frames
from monitoring_pipelines.warehouse import Warehouse

if TYPE_CHECKING:
    from monitoring_pipelines.ml.registry import ModelRegistry

# What the detectors read of clean_metrics (not its bookkeeping columns).
GRID_COLUMNS = ("tenant", "service", "metric", "ts", "value", "is_gap")

Span = tuple[pd.Timestamp, pd.Timestamp]


class NoChampion(LookupError):
    """A tenant to score has no champion model yet; the message names the tenants."""


def tenant_spans(partition_keys: Iterable[str]) -> dict[str, list[Span]]:
    """``date|tenant`` keys as each tenant's runs of consecutive days, ``[start, end)`` each."""
    days: dict[str, list[pd.Timestamp]] = {}
    for key in partition_keys:
        date, tenant = str(key).split("|", 1)
        days.setdefault(tenant, []).append(pd.Timestamp(date, tz="UTC"))
    one = pd.Timedelta(days=1)
    spans: dict[str, list[Span]] = {}
    for tenant, found in sorted(days.items()):
        runs = spans.setdefault(tenant, [])
        for day in sorted(set(found)):
            if runs and runs[-1][1] == day:
                runs[-1] = (runs[-1][0], day + one)
            else:
                runs.append((day, day + one))
    return spans


def load_models(
    models: "ModelRegistry", tenant: str, alias: str = "champion"
) -> tuple[dict, dict[str, int]]:
    """The tenant's detectors behind ``alias`` per kind, and their versions."""
    from monitoring_pipelines.ml.registry import ModelNotFound

    model_sets, versions = {}, {}
    for kind in KINDS:
        try:
            model_set, info = models.load_by_alias(kind, tenant, alias)
        except ModelNotFound:
            continue
        model_sets[kind] = model_set
        versions[kind] = info.version
    return model_sets, versions


def score_members(
    wh: Warehouse,
    store: WarehouseStateStore,
    tenant: str,
    model_sets: dict,
    versions: dict[str, int],
    start: pd.Timestamp,
    end: pd.Timestamp,
    step_seconds: int,
    *,
    carry_values: bool = True,
) -> Carried:
    """The tenant's grid frames and each model's scores on ``[start, end)``, and how the
    look-back was found.

    Exactly the scores of the whole history (each detector scored from the tenant's first
    point), computed for the new points only: each detector's calibration state is carried from
    the last scored day (:mod:`monitoring_pipelines.ml.incremental`), and only the past *values*
    its features need are read. States live in the warehouse's ``score_states`` table, keyed by
    version; without one (first run, a new champion or challenger, the rows deleted) it catches
    up from the first point once. The past values the features need are carried from the run
    that ended where this one starts (:mod:`monitoring_pipelines.ml.lookback`), so a daily run
    reads only its day; without them (or after late data) it reads the look-back.
    """

    def frames_from(first: pd.Timestamp | None, last: pd.Timestamp) -> dict:
        grid = wh.read_records(
            "clean_metrics", tenant=tenant, start=first, end=last, columns=GRID_COLUMNS
        )
        return group_frames(grid, step_seconds=step_seconds) if len(grid) else {}

    step = pd.Timedelta(seconds=step_seconds)
    return score_carried(
        store,
        tenant,
        model_sets,
        versions,
        start,
        end,
        step,
        frames_from,
        carry_values=carry_values,
    )


def scored_points(
    frames: dict[tuple, pd.DataFrame],
    members: dict[str, dict[tuple, pd.DataFrame]],
    start: pd.Timestamp,
    end: pd.Timestamp,
    thresholds: dict[str, float],
    policy: dict,
    versions: dict[str, int],
    run_id: str,
) -> pd.DataFrame:
    """Per point of ``[start, end)``: each member's score, the ensemble score and the decision,
    with the model versions and the run that scored it (the rows of ``anomaly_scores``)."""
    combiner = CombinerConfig.from_dict(policy.get("combiner", DEFAULT_COMBINER.to_dict()))
    ensemble = per_series(combine_groups(members, combiner))
    by_member = {kind: per_series(groups) for kind, groups in members.items()}
    default = float(policy.get("default_threshold", DEFAULT_THRESHOLD))
    values = per_series(slice_frames(frames, start, end))
    parts = []
    for name, score in ensemble.items():
        tenant, service, metric = name.split("/", 2)
        threshold = thresholds.get(f"{service}/{metric}", default)
        part = pd.DataFrame(
            {
                "tenant": tenant,
                "service": service,
                "metric": metric,
                "ts": score.index,
                "value": values[name].reindex(score.index).to_numpy() if name in values else np.nan,
                "ensemble_score": score.to_numpy(),
                "threshold": threshold,
            }
        )
        for kind, row in CATALOGUE.items():
            member = by_member.get(kind, {}).get(name)
            part[row.score_column] = (
                np.nan if member is None else member.reindex(score.index).to_numpy()
            )
        with np.errstate(invalid="ignore"):
            part["is_anomaly"] = part["ensemble_score"].to_numpy() >= threshold
        parts.append(part[part["value"].notna()])
    if not parts:
        return pd.DataFrame()
    scored = pd.concat(parts, ignore_index=True)
    scored["model_versions"] = json.dumps(versions, sort_keys=True)
    scored["run_id"] = run_id
    return scored


def shadow_points(
    scored: pd.DataFrame,
    members: dict[str, dict[tuple, pd.DataFrame]],
    kind: str,
    challenger: dict[tuple, pd.DataFrame],
    version: int,
    policy: dict,
) -> pd.DataFrame:
    """The rows of ``shadow_scores`` for one challenger: on every point ``anomaly_scores`` holds,
    the challenger's own score and the ensemble with the challenger in place of its kind's
    champion, judged against the same threshold as the champion's ensemble."""
    if scored.empty:
        return pd.DataFrame()
    combiner = CombinerConfig.from_dict(policy.get("combiner", DEFAULT_COMBINER.to_dict()))
    swapped = {**members, kind: challenger}
    ensemble = per_series(combine_groups(swapped, combiner))
    own = per_series(challenger)
    keys = scored["tenant"] + "/" + scored["service"] + "/" + scored["metric"]
    parts = []
    for name, rows in scored.groupby(keys, sort=False):
        index = pd.DatetimeIndex(rows["ts"])
        ens = ensemble.get(name)
        mine = own.get(name)
        part = rows[["tenant", "service", "metric", "ts", "threshold"]].copy()
        part["score"] = np.nan if mine is None else mine.reindex(index).to_numpy()
        part["ensemble_score"] = np.nan if ens is None else ens.reindex(index).to_numpy()
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    with np.errstate(invalid="ignore"):
        out["is_anomaly"] = out["ensemble_score"].to_numpy() >= out["threshold"].to_numpy()
    out["kind"] = kind
    out["version"] = int(version)
    out["run_id"] = scored["run_id"].iloc[0]
    return out


@dataclass
class DayScores:
    tenant: str
    day: pd.Timestamp
    rows: pd.DataFrame
    versions: dict[str, int]
    shadow: dict[str, int] = field(default_factory=dict)
    # "carried", or "read: <why>" when the run read the look-back from the warehouse.
    lookback: str = "carried"


@dataclass
class ScoringOutcome:
    """What one scoring run did: per tenant-day its rows, and the challengers' reviews."""

    days: list[DayScores] = field(default_factory=list)
    champions: dict[str, dict[str, int]] = field(default_factory=dict)
    challengers: dict[str, dict[str, int]] = field(default_factory=dict)
    reviews: list[Any] = field(default_factory=list)

    @property
    def points(self) -> int:
        return sum(len(d.rows) for d in self.days)

    @property
    def anomalies(self) -> int:
        return sum(int(d.rows["is_anomaly"].sum()) for d in self.days if len(d.rows))


def pending_challengers(
    models: "ModelRegistry", tenant: str, champions: dict[str, int]
) -> tuple[dict, dict[str, int], dict[str, dict[str, str]]]:
    """The tenant's challengers still waiting for their promotion check (registered as
    challenger to a champion, no decision yet), by kind: sets, versions and tags. Only those
    are loaded; a rejected challenger or a candidate that never qualified costs a tag read."""
    from monitoring_pipelines.ml.registry import CHALLENGER
    from monitoring_pipelines.ml.registry.promotion import LIVE_FROM_TAG

    waiting = {
        kind: info
        for kind, info in models.alias_infos(tenant, CHALLENGER).items()
        if kind in champions
        and info.version != champions[kind]
        and LIVE_FROM_TAG in info.tags
        and "promotion.decision" not in info.tags
    }
    sets = {kind: models.load_by_alias(kind, tenant, CHALLENGER)[0] for kind in waiting}
    return (
        sets,
        {kind: info.version for kind, info in waiting.items()},
        {kind: info.tags for kind, info in waiting.items()},
    )


def score_days(
    wh: Warehouse,
    models: "ModelRegistry",
    partition_keys: Iterable[str],
    step_seconds: int,
    run_id: str,
    review: Callable[[str, dict[str, int], dict[str, int]], list] | None = None,
) -> ScoringOutcome:
    """Score ``date|tenant`` partitions with the champions and write ``anomaly_scores``, and
    score each pending challenger in shadow on its live days (those after its validation week)
    into ``shadow_scores``. Before a tenant is scored, ``review(tenant, champions, challengers)``
    (the promotion gate, :func:`monitoring_pipelines.ml.challenger_review.review_challengers`)
    judges the challengers that shadowed long enough in earlier runs, so operators had time to
    give feedback on those days' incidents and the days scored now use the promoted champions.

    A run of several tenants writes nothing unless every one of them has a champion."""
    by_tenant = tenant_spans(partition_keys)
    untrained = [t for t in by_tenant if not models.champion_versions(t)]
    if untrained:
        raise NoChampion(f"{', '.join(untrained)}: no champion model yet; run training_job first")
    outcome = ScoringOutcome()
    store = WarehouseStateStore(wh)
    for tenant, spans in by_tenant.items():
        if review is not None:
            champions = models.champion_versions(tenant)
            _, waiting, _ = pending_challengers(models, tenant, champions)
            if waiting:
                outcome.reviews.extend(review(tenant, champions, waiting))
        model_sets, versions = load_models(models, tenant)
        shadows = pending_challengers(models, tenant, versions)
        outcome.champions[tenant] = versions
        outcome.challengers[tenant] = shadows[1]
        thresholds, policy = wh.read_thresholds(tenant)
        policy = policy or {"alert_policy": AlertPolicy().__dict__}
        for start, end in spans:
            carried = score_members(
                wh, store, tenant, model_sets, versions, start, end, step_seconds
            )
            members = carried.members
            scored = scored_points(
                carried.frames, members, start, end, thresholds, policy, versions, run_id
            )
            wh.replace_partition("anomaly_scores", tenant, start, end, scored)
            shadowed = _shadow(
                wh, store, tenant, (start, end), scored, members, step_seconds, policy, shadows
            )
            by_day = _by_day(scored)
            for day in pd.date_range(start, end, freq="D", inclusive="left"):
                rows = by_day.get(day, scored.iloc[:0])
                outcome.days.append(
                    DayScores(tenant, day, rows, versions, shadowed.get(day, {}), carried.lookback)
                )
    return outcome


def _shadow(
    wh: Warehouse,
    store: WarehouseStateStore,
    tenant: str,
    span: Span,
    scored: pd.DataFrame,
    members: dict,
    step_seconds: int,
    policy: dict,
    challengers: tuple[dict, dict[str, int], dict[str, dict[str, str]]],
) -> dict[pd.Timestamp, dict[str, int]]:
    """Score the challengers on the live days of ``span``; ``{day: {kind: points}}``."""
    sets, versions, tags = challengers
    out: dict[pd.Timestamp, dict[str, int]] = {}
    for kind, model_set in sets.items():
        live_from = pd.Timestamp(tags[kind]["challenger.live_from"])
        start = max(span[0], live_from.floor("D"))
        if start >= span[1]:
            continue
        # The champions' run keeps the carried look-back; a challenger reads its own.
        scores = score_members(
            wh,
            store,
            tenant,
            {kind: model_set},
            {kind: versions[kind]},
            start,
            span[1],
            step_seconds,
            carry_values=False,
        ).members
        live = scored[pd.DatetimeIndex(scored["ts"]) >= start] if len(scored) else scored
        rows = shadow_points(live, members, kind, scores[kind], versions[kind], policy)
        wh.replace_shadow_scores(tenant, kind, versions[kind], start, span[1], rows)
        for day, part in _by_day(rows).items():
            out.setdefault(day, {})[kind] = len(part)
    return out


def _by_day(scored: pd.DataFrame) -> dict[pd.Timestamp, pd.DataFrame]:
    if scored.empty:
        return {}
    return dict(tuple(scored.groupby(pd.DatetimeIndex(scored["ts"]).floor("D"))))
