"""The backtest's fits and scores, group by group, on several processes when that pays.

Each group (a tenant's service, or one series) is fitted and scored by every detector kind
independently of the others, so groups go to a pool of worker processes and come back in input
order; every fit is seeded, so the scores are the ones a serial run gives (a test holds this).
Each worker imports the heavy libraries its kinds need once, when it starts (TensorFlow,
Prophet), and keeps its compiled LSTM trainers from group to group; BLAS is held to one
thread per worker so two workers use two cores instead of fighting over them.

A pool costs about 21 s of CPU per worker to start (a fresh interpreter, TensorFlow imported again),
so a small backtest runs in this process: see :data:`MIN_PARALLEL_CELLS`. Workers are spawned
(TensorFlow does not survive a fork), so a script calling the backtest on many groups keeps its
top-level work under ``if __name__ == "__main__":``, as for any process pool.
"""

import os
import pickle
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pandas as pd

from monitoring_pipelines.ml.backtest_rows import Group
from monitoring_pipelines.ml.base import Detector
from monitoring_pipelines.ml.frames import GroupKey
from monitoring_pipelines.ml.model_set import _build

DetectorSpec = type[Detector] | Callable[[], Detector]
# A detector needs this many training steps at least: eight hours of 5-minute steps. Detectors find
# their season (or none) from the training data and judge points against trailing windows from the
# first hours, so a short series (1,000 points at --train-fraction 0.15) still gets scores; 288
# left every series under about 1,900 points unscored.
MIN_TRAIN_POINTS = 96
# Steps of past data scored before each refit chunk (or the detector's own history_steps, if more):
# enough for the two-week calibration window to be full, without rescoring all history each time.
REFIT_CONTEXT_POINTS = 3 * 2016
# Grid cells (steps x metrics x kinds) below which the backtest stays in one process. Measured on
# 4 of SKAB's machines with every kind (176,000 cells, the same output): 56 s of CPU in one
# process, 98 s on two workers, so each worker costs about 21 s to start (a fresh interpreter,
# TensorFlow, Prophet); two workers halve the rest, which pays from about 130,000 such cells.
MIN_PARALLEL_CELLS = 200_000
# What each group's result holds: the scores of every kind that scored it, and why others did not.
GroupScores = tuple[dict[str, pd.DataFrame], dict[str, str]]


def fit_and_score(
    spec: DetectorSpec,
    frame: pd.DataFrame,
    n_train: int,
    refit_every: int | None,
    max_train_points: int | None,
) -> pd.DataFrame:
    """Calibrated scores for every step of ``frame``, each from a model fitted on earlier steps."""
    detector = _build(spec, None).fit(frame.iloc[:n_train])
    if not refit_every or n_train + refit_every >= len(frame):
        return detector.score(frame)
    parts = [detector.score(frame.iloc[: n_train + refit_every])]
    start = n_train + refit_every
    while start < len(frame):
        stop = min(start + refit_every, len(frame))
        first = 0 if max_train_points is None else max(0, start - max_train_points)
        detector = _build(spec, None).fit(frame.iloc[first:start])
        context = max(0, start - max(REFIT_CONTEXT_POINTS, detector.history_steps()))
        parts.append(detector.score(frame.iloc[context:stop]).iloc[start - context :])
        start = stop
    return pd.concat(parts)


def score_group(
    group: Group, specs: Sequence[DetectorSpec], kinds: Sequence[str], fit: dict
) -> GroupScores:
    """Every kind's scores on one group, and why a kind was skipped there (keyed by label)."""
    scores: dict[str, pd.DataFrame] = {}
    skipped: dict[str, str] = {}
    for spec, kind in zip(specs, kinds, strict=True):
        label = f"{'/'.join(group.key)} {kind}"
        if group.n_train < MIN_TRAIN_POINTS:
            skipped[label] = f"{group.n_train} training steps, fewer than {MIN_TRAIN_POINTS}"
            continue
        try:
            scores[kind] = fit_and_score(spec, group.frame, group.n_train, **fit)
        except ValueError as exc:
            skipped[label] = str(exc)
    return scores, skipped


def worker_count(
    groups: Sequence[Group], specs: Sequence[DetectorSpec], workers: int | None
) -> int:
    """How many processes to use: ``workers`` if given, else one per core when the backtest is
    big enough to pay for starting them and its detectors can be sent to another process."""
    if workers is not None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        return min(workers, max(1, len(groups)))
    cells = sum(g.frame.size for g in groups) * len(specs)
    if len(groups) < 2 or cells < MIN_PARALLEL_CELLS or not _picklable(specs):
        return 1
    return min(len(os.sched_getaffinity(0)), len(groups))


def member_scores(
    groups: Sequence[Group],
    specs: Sequence[DetectorSpec],
    kinds: Sequence[str],
    fit: dict,
    progress: bool,
    workers: int | None = None,
) -> tuple[dict[str, dict[GroupKey, pd.DataFrame]], dict[str, str]]:
    """Each kind's calibrated scores per group, and why a group-kind was skipped."""
    from tqdm.auto import tqdm

    out: dict[str, dict[GroupKey, pd.DataFrame]] = {k: {} for k in kinds}
    skipped: dict[str, str] = {}
    processes = worker_count(groups, specs, workers)
    bar = tqdm(
        total=len(groups),
        desc=f"backtest ({processes} process{'es' if processes > 1 else ''})",
        unit="group",
        file=sys.stderr,
        disable=not progress,
    )
    results = _results(groups, specs, kinds, fit, processes)
    for group, (scores, why) in zip(groups, results, strict=True):
        for kind, frame in scores.items():
            out[kind][group.key] = frame
        skipped.update(why)
        bar.set_postfix_str("/".join(group.key), refresh=False)
        bar.update()
    bar.close()
    return out, skipped


def _results(groups, specs, kinds, fit, processes: int):
    """Each group's :data:`GroupScores`, in input order, from this process or a pool."""
    if processes <= 1:
        for group in groups:
            yield score_group(group, specs, kinds, fit)
        return
    context = get_context("spawn")
    with ProcessPoolExecutor(
        processes, mp_context=context, initializer=_start_worker, initargs=(tuple(kinds),)
    ) as pool:
        futures = [pool.submit(score_group, group, specs, kinds, fit) for group in groups]
        for future in futures:
            yield future.result()


def _start_worker(kinds: tuple[str, ...]) -> None:
    """Import once, in each worker, what its kinds need; one BLAS thread per worker."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if "lstm" in kinds:
        from monitoring_pipelines.ml.lstm.config import LstmConfig
        from monitoring_pipelines.ml.lstm.network import tensorflow_modules

        # As many TensorFlow threads as in one process: another count sums in another order, and
        # the float32 scores would differ in their last digits from the serial run's.
        tensorflow_modules(LstmConfig().threads)
    if "prophet" in kinds:
        import prophet  # noqa: F401


def _picklable(specs: Sequence[DetectorSpec]) -> bool:
    try:
        pickle.dumps(list(specs))
    except (pickle.PicklingError, AttributeError, TypeError):
        return False
    return True
