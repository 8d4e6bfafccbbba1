"""The monitoring-pipelines command as a user runs it: a child process, its output captured."""

import subprocess
import sys


def run_cli(*args, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """``monitoring-pipelines ARGS`` (each argument as text); ``kwargs`` go to subprocess.run."""
    return subprocess.run(
        [sys.executable, "-m", "monitoring_pipelines.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )
