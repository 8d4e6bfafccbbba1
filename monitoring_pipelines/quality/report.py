"""The evidence of one gated partition on disk: the GX result as JSON, a readable page and the
quarantined rows as CSV.

Each partition gets its own folder, ``<quality dir>/<folder name>/`` holding
``validation.json``, ``validation.html`` and ``quarantine.csv``. The
folder name encodes the partition key injectively (see :func:`folder_name`), so no two partitions
share a folder, even on a file system that ignores case or drops trailing dots. The page is
rendered from ``templates/validation.html`` (Jinja2, autoescaped). The UI and alert messages
link to these files through :func:`quality_url`: the address ``monitoring-pipelines ui`` serves
the home's ``quality`` folder at, so a link works from whichever machine shows the UI, not only
the one that ran the gate.
"""

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from urllib.parse import quote

from monitoring_pipelines.quality import gx_suite
from monitoring_pipelines.quality.checks import CHECK_SPECS
from monitoring_pipelines.quality.checks.base import ERROR, MAX_EXAMPLES
from monitoring_pipelines.quality.gate import GateResult
from monitoring_pipelines.quality.jsonsafe import json_safe
from monitoring_pipelines.templating import template_environment

TEMPLATE_DIR = Path(__file__).parent / "templates"
QUARANTINE_SHOWN = 50
# The files of a partition's folder, by the name its link carries.
FILES = {
    "gx_report": "validation.html",
    "gx_validation": "validation.json",
    "quarantine_rows": "quarantine.csv",
}

_LITERAL = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
# Longer names end in a hash of the key; the key itself is inside validation.json.
_MAX_NAME = 200


def _encode(text: str, keep: str = "") -> str:
    """Lower-case letters, digits and '-' as they are; a '.' between two of those too; every
    other character as %XX per UTF-8 byte (upper-case hex). Decoding is unambiguous, so two
    texts never share an encoding, and case-insensitive file systems cannot fold two into one."""
    out = []
    for i, ch in enumerate(text):
        inner_dot = ch == "." and 0 < i < len(text) - 1 and {text[i - 1], text[i + 1]} <= _LITERAL
        if ch in _LITERAL or ch in keep or inner_dot:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def folder_name(partition_key: str) -> str:
    """A folder name for a partition key, injective: ``2026-10-01|acme`` becomes
    ``2026-10-01_acme``, ``2026-10-01|Acme`` ``2026-10-01_%41cme``, ``2026-10-01|acme.``
    ``2026-10-01_acme%2E``. The first '|' becomes '_'; before it '_' is escaped, after it kept,
    so the first bare '_' marks where the tenant starts."""
    head, bar, tail = partition_key.partition("|")
    name = _encode(head) + ("_" + _encode(tail, keep="_") if bar else "")
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(partition_key.encode("utf-8", "surrogatepass")).hexdigest()
        # '~' never appears in an encoding, so a hashed name cannot equal a plain one.
        name = f"{name[: _MAX_NAME - 33]}~{digest[:32]}"
    return name


def quality_url(files_url: str, partition_key: str, name: str) -> str:
    """The link to one of a partition's files (``name`` from :data:`FILES`): ``files_url``, the
    address the home's files are served at, then ``quality/<folder>/<file>``."""
    folder = quote(folder_name(partition_key), safe="")
    return f"{files_url.rstrip('/')}/quality/{folder}/{FILES[name]}"


def _atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` in one step, so a reader never sees half a page."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _gate_summary(result: GateResult, partition_key: str) -> dict:
    return {
        "partition_key": partition_key,
        "rows_in": result.rows_in,
        "accepted": len(result.accepted),
        "quarantined": len(result.quarantined),
        "blocked": result.blocked,
        "checks": [
            {
                "name": c.name,
                "passed": c.passed,
                "severity": c.severity,
                "description": c.description,
                "metadata": c.metadata,
            }
            for c in result.checks
        ],
    }


def write_validation(result: GateResult, directory: Path, partition_key: str) -> tuple[Path, Path]:
    """Write the GX validation result as JSON and as a small HTML page for one partition, and its
    quarantined rows as CSV.

    Files go to ``<directory>/<folder name>/`` (see :data:`FILES`) and are replaced on every
    run. The JSON is the GX result with a ``gate`` section (the check outcomes, and the partition
    key itself) added.
    """
    folder = Path(directory) / folder_name(partition_key)
    folder.mkdir(parents=True, exist_ok=True)
    payload = dict(result.validation)
    payload["gate"] = _gate_summary(result, partition_key)
    json_path = folder / "validation.json"
    html_path = folder / "validation.html"
    text = json.dumps(json_safe(payload), indent=2, allow_nan=False, default=str)
    _atomic_write(json_path, text + "\n")
    _atomic_write(html_path, render_page(result, partition_key))
    _atomic_write(folder / FILES["quarantine_rows"], result.quarantined.to_csv(index=False))
    return json_path, html_path


# -- the page --------------------------------------------------------------------------------------


@functools.cache
def _environment():
    """The page's Jinja environment (jinja2 is imported only when a page is rendered: it was ~3%
    of the code location's load time)."""
    return template_environment(TEMPLATE_DIR)


def _compact(value: object, limit: int = 400) -> str:
    text = json.dumps(json_safe(value), default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _status(passed: bool, severity: str) -> tuple[str, str]:
    if passed:
        return "pass", "PASS"
    return ("error", "ERROR") if severity == ERROR else ("warn", "WARN")


def _check_rows(result: GateResult) -> list[dict]:
    blocking = {spec.name: spec.blocking for spec in CHECK_SPECS}
    rows = []
    for c in result.checks:
        css, label = _status(c.passed, c.severity)
        rows.append(
            {
                "name": c.name,
                "blocking": blocking.get(c.name, False),
                "css": css,
                "label": label,
                "description": c.description,
                "figures": _compact(c.metadata, 1200),
            }
        )
    return rows


def _expectation_row(item: dict) -> dict:
    config = item.get("expectation_config") or {}
    body = item.get("result") or {}
    kwargs = {k: v for k, v in (config.get("kwargs") or {}).items() if k != "batch_id"}
    if "observed_value" in body:
        observed = _compact(body["observed_value"])
    else:
        observed = f"{body.get('element_count', 0)} rows"
    unexpected = ""
    if "unexpected_count" in body:
        percent = body.get("unexpected_percent")
        unexpected = str(body["unexpected_count"])
        if percent:
            unexpected += f" ({percent:.3g}%)"
    examples = body.get("partial_unexpected_index_list") or body.get("partial_unexpected_list", [])
    error = gx_suite.error_message(item.get("exception_info"))
    if error:
        unexpected = f"error: {error.splitlines()[0]}"
    return {
        "check": (config.get("meta") or {}).get("check", ""),
        "type": config.get("type", ""),
        "arguments": _compact(kwargs),
        "success": bool(item.get("success")),
        "observed": observed,
        "unexpected": unexpected,
        "examples": _compact(examples[:MAX_EXAMPLES]),
    }


def render_page(result: GateResult, partition_key: str) -> str:
    """The quality page of one partition: summary, checks, GX expectations, quarantined rows."""
    gx = result.validation
    stats = gx.get("statistics", {})
    shown = result.quarantined.head(QUARANTINE_SHOWN)
    return (
        _environment()
        .get_template("validation.html")
        .render(
            partition_key=partition_key,
            rows_in=result.rows_in,
            accepted=len(result.accepted),
            quarantined=len(result.quarantined),
            blocked=result.blocked,
            suite_name=gx.get("suite_name", ""),
            met=stats.get("successful_expectations", "?"),
            evaluated=stats.get("evaluated_expectations", "?"),
            checks=_check_rows(result),
            expectations=[_expectation_row(item) for item in gx.get("results", [])],
            quarantine_rows=list(shown.itertuples(index=False)),
        )
    )
