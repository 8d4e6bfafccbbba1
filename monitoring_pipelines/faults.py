"""Fault injection for the crash tests, and nothing else.

``MONITORING_FAULT_AT=<point>`` makes the process group die by SIGKILL (as ``kill -9`` of
``monitoring-pipelines ingest`` would, workers included) when it reaches that point; unset, a
point costs one dictionary look-up. Points: ``stage`` (inside the staging transaction, rows
written, not committed), ``staged`` (staging committed, nothing gated), ``gate`` (inside the
gate's transaction, some partitions written, not committed), ``grid`` (gate committed, inside
the grid's transaction).
"""

import os
import signal

ENV = "MONITORING_FAULT_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) != name:
        return
    try:
        os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
        os.kill(os.getpid(), signal.SIGKILL)
