"""``make bench-detection``: how well each member and the ensemble detect, on real data first.

- **SKAB** (real, labelled, from ``../shared/datasets/skab`` beside the repository, skipped cleanly
  when absent): the backtest as a user runs it (``--train-fraction 0.4 --max-train-points 400``,
  every catalogued kind and the pipeline's ensemble), judged by SKAB's own point-wise scorer
  (F1, false-alarm rate FAR, missed-alarm rate MAR) on each member's score at its default level and
  on the ensemble's decisions (``is_anomaly``: early and once, after the refractory step), on the
  undamped ensemble at the pipeline's level (what SKAB's point-wise metric asks for), and by this
  project's event-level figures (precision, recall, F1, median delay).
- **SKAB's sensors one by one** (:mod:`benchmarks.nab_proxy`): the proxy of the held-out
  benchmark of single production metrics, each sensor a ``timestamp,value`` series backtested
  with ``--train-fraction 0.15 --max-train-points 750``, scored NAB-style (0 never fires, 100
  perfect, random about 17) at the best single level for all series and at the backtest's own
  decisions.
- **The demo** (the generator this project wrote: a regression check, not the target):
  :func:`~monitoring_pipelines.ml.demo_evaluation.evaluate_on_demo` on two tenants, event-level
  figures on the held-out week, for the data-free default ensemble and for the ensemble with
  weights learned per tenant on the validation week (what the pipeline runs where labels exist).

Every table has the reference baseline (a plain rolling z-score with anomaly likelihood,
:mod:`~monitoring_pipelines.ml.baseline`) beside the members, and the targets with met or the gap.
"""

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from monitoring_pipelines.ml.baseline import RollingZScoreBaseline
from monitoring_pipelines.ml.catalogue import KINDS, detector_class, parse_kinds
from monitoring_pipelines.ml.ensemble import DEFAULT_COMBINER, combine_arrays
from monitoring_pipelines.ml.thresholds import DEFAULT_THRESHOLD, MEMBER_LEVELS, default_level

SKAB = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "skab"
ENSEMBLE = "ensemble"
# The pipeline's ensemble score before the backtest's refractory step, at the pipeline's level:
# what the warehouse's is_anomaly holds, and what SKAB's point-wise metric (every point of a
# fault flagged) asks for.
PIPELINE = "pipeline"
UNDAMPED = f"{ENSEMBLE} undamped"
# The pipeline's ensemble where a tenant's calibration week holds labelled incidents: weights
# learned per tenant on the demo's validation week (ml.training.learn_combiner).
LEARNED = f"{ENSEMBLE} learned"
BASELINE = RollingZScoreBaseline.kind
SKAB_TARGET = {"f1": 0.80, "far": 15.0}
DEMO_TARGET = {"f1": 0.90, "false_alarms_per_series_week": 1.0}
SKAB_SECONDS_TARGET = 300.0
_SCORE_LINE = re.compile(r"F1 (?P<f1>[\d.]+)\s+FAR (?P<far>[\d.]+)%\s+MAR (?P<mar>[\d.]+)%")


def _event_row(summary: pd.DataFrame) -> dict:
    row = summary.iloc[-1]
    return {
        "event_precision": row["precision"],
        "event_recall": row["recall"],
        "event_f1": row["f1"],
        "delay_min": row["delay_median_minutes"],
    }


def _skab_points(out: Path, column: str, level: float | None) -> dict:
    command = [sys.executable, str(SKAB / "score.py"), str(out), "--column", column]
    if level is not None:
        command += ["--level", str(level)]
    run = subprocess.run(command, capture_output=True, text=True, check=True)
    found = _SCORE_LINE.search(run.stdout)
    if not found:
        printed = f"{run.stdout.strip()} {run.stderr.strip()}"
        raise RuntimeError(f"score.py printed no figures: {printed}")
    return {k: float(v) for k, v in found.groupdict().items()}


def skab(kinds: list[str]) -> tuple[pd.DataFrame, float]:
    """Per member, the baseline and the ensemble: SKAB's point figures and the event figures."""
    from monitoring_pipelines.ml.backtest import run_backtest
    from monitoring_pipelines.ml.backtest_io import read_inputs, read_labels, write_series

    records = read_inputs(SKAB / "records").records_frame
    labels = read_labels(SKAB / "labels.json")
    options = {"train_fraction": 0.4, "max_train_points": 400, "progress": False}
    began = time.perf_counter()
    result = run_backtest(records, labels, detectors=[detector_class(k) for k in kinds], **options)
    seconds = time.perf_counter() - began
    reference = run_backtest(records, labels, detectors=[RollingZScoreBaseline], **options)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        out, ref_out = Path(tmp) / "members", Path(tmp) / "baseline"
        for name, frame in result.series.items():
            members = {k: frame[f"{k}_score"].to_numpy(dtype="float64") for k in kinds}
            undamped = combine_arrays(members, result.combiner)
            frame = frame.assign(**{f"{PIPELINE}_score": undamped})
            write_series(out, name, frame, [*result.detectors, PIPELINE])
        for name, frame in reference.series.items():
            write_series(ref_out, name, frame, reference.detectors)
        for kind in kinds:
            level = MEMBER_LEVELS.get(kind, DEFAULT_THRESHOLD)
            rows[kind] = {
                **_skab_points(out, f"{kind}_score", level),
                **_event_row(result.member_summaries[kind]),
            }
        rows[BASELINE] = {
            **_skab_points(ref_out, f"{BASELINE}_score", DEFAULT_THRESHOLD),
            **_event_row(reference.member_summaries[BASELINE]),
        }
        rows[ENSEMBLE] = {
            **_skab_points(out, "is_anomaly", None),
            **_event_row(result.summary),
        }
        level = default_level(kinds, result.combiner)
        rows[UNDAMPED] = _skab_points(out, f"{PIPELINE}_score", level)
    return pd.DataFrame.from_dict(rows, orient="index"), seconds


def demo(kinds: list[str], tenants: tuple[str, ...]) -> tuple[pd.DataFrame, float]:
    """Event figures on the demo's held-out week, per member, the baseline and the ensemble."""
    from monitoring_pipelines.ml.demo_evaluation import evaluate_on_demo
    from monitoring_pipelines.sources.demo import DemoConfig

    began = time.perf_counter()
    result = evaluate_on_demo(
        [detector_class(k) for k in kinds] + [RollingZScoreBaseline],
        demo=DemoConfig(tenants=tenants),
        combiners=[DEFAULT_COMBINER],
        learn=kinds,
    )
    seconds = time.perf_counter() - began
    test = result.test
    members = f"{ENSEMBLE}[{'+'.join(kinds)}]"
    rows = {name: test.loc[name] for name in [*kinds, BASELINE] if name in test.index}
    names = {ENSEMBLE: f"{members}:{DEFAULT_COMBINER.rule}", LEARNED: f"{members}:learned"}
    for row, name in names.items():
        if name in test.index:
            rows[row] = test.loc[name]
    table = pd.DataFrame(rows).T
    keep = ["precision", "recall", "f1", "delay_median_minutes", "false_alarms_per_series_week"]
    return table[keep].rename(columns={"delay_median_minutes": "delay_min"}), seconds


def single_series(kinds: list[str], fmt: dict) -> None:
    """The NAB-style table of SKAB's sensors one by one, with the target against the baseline."""
    from benchmarks.nab_proxy import run

    table, seconds, _ = run(SKAB, kinds)
    print(
        f"SKAB sensors one by one (272 single series, NAB-style; every kind and the ensemble "
        f"in {seconds:.0f} s; 'best' at the level in 'level', 'decisions' = is_anomaly):"
    )
    print(table.to_string(**fmt))
    ens, base = table.loc["ensemble_score", "best"], table.loc["baseline_score", "best"]
    print(
        "  target ensemble above the reference baseline: "
        + _verdict(ens > base, f"{ens:.1f} against {base:.1f}")
    )


def _verdict(ok: bool, gap: str) -> str:
    return "met" if ok else f"gap: {gap}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help="members (default: every kind)")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-single", action="store_true", help="skip the single-series proxy")
    parser.add_argument("--demo-tenants", default="acme,globex")
    args = parser.parse_args(argv)
    kinds = parse_kinds(args.kinds)
    pd.set_option("display.width", 160)
    fmt = {"float_format": lambda v: f"{v:.3f}"}
    if (SKAB / "records").is_dir():
        table, seconds = skab(kinds)
        print(f"SKAB (34 real experiments; every kind and the ensemble in {seconds:.0f} s):")
        print(table.to_string(**fmt))
        ens = table.loc[UNDAMPED]
        print(
            f"  target ensemble (undamped) F1 >= {SKAB_TARGET['f1']} "
            f"at FAR <= {SKAB_TARGET['far']}%: "
            + _verdict(
                ens["f1"] >= SKAB_TARGET["f1"] and ens["far"] <= SKAB_TARGET["far"],
                f"F1 {ens['f1']:.3f} at FAR {ens['far']:.1f}%",
            )
        )
        print(
            f"  target every kind on SKAB in under {SKAB_SECONDS_TARGET:.0f} s: "
            + _verdict(seconds < SKAB_SECONDS_TARGET, f"{seconds:.0f} s")
        )
        if not args.skip_single:
            single_series(kinds, fmt)
    else:
        print(f"SKAB: skipped ({SKAB} not found)")
    if not args.skip_demo:
        tenants = tuple(t.strip() for t in args.demo_tenants.split(",") if t.strip())
        table, seconds = demo(kinds, tenants)
        print(f"demo ({', '.join(tenants)}; held-out week; {seconds:.0f} s):")
        print(table.to_string(**fmt))
        for row in (ENSEMBLE, LEARNED):
            if row not in table.index:
                continue
            ens = table.loc[row]
            fa = ens["false_alarms_per_series_week"]
            print(
                f"  target {row} event F1 >= {DEMO_TARGET['f1']} with <= 1 false alarm per "
                "series-week: "
                + _verdict(
                    ens["f1"] >= DEMO_TARGET["f1"]
                    and fa <= DEMO_TARGET["false_alarms_per_series_week"],
                    f"F1 {ens['f1']:.3f}, {fa:.2f} false alarms per series-week",
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
