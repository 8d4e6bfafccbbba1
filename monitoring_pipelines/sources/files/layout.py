"""Which column is what: a file's header read into roles, and the names a single-series file
takes from its path."""

import os
from dataclasses import dataclass
from pathlib import Path

from monitoring_pipelines.sources.files.text import InputFileError, quote, summary
from monitoring_pipelines.sources.records import is_valid_name

_FORMATS = ((".csv.gz", "csv"), (".csv", "csv"), (".parquet", "parquet"), (".pq", "parquet"))
NAME_ROLES = ("tenant", "service", "metric")
DEFAULT_NAME = "default"


def source_name(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root`` (posix) when it lies under it, else its absolute posix path."""
    absolute = Path(os.path.abspath(path))
    if root is not None:
        base = Path(os.path.abspath(root))
        if absolute != base and absolute.is_relative_to(base):
            return absolute.relative_to(base).as_posix()
    return absolute.as_posix()


@dataclass(frozen=True)
class Layout:
    names: tuple[str, ...]  # header names as received (stripped), in file order
    roles: dict[str, int]  # tenant/service/metric/ts/value/tags -> column position
    extras: tuple[int, ...]  # positions of the columns that become tags
    path_names: dict[str, str] | None  # tenant/service/metric of a single-series file

    def label(self, position: int) -> str:
        """The column's name as a quarantine ``field``: its role, else its name made safe."""
        for role, pos in self.roles.items():
            if pos == position:
                return role
        name = self.names[position]
        return name if is_valid_name(name) else quote(name, 40)


def read_layout(header: list[str], path: Path, root: Path | None, source: str) -> Layout:
    names = tuple(h.strip() or f"column_{i + 1}" for i, h in enumerate(header))
    positions: dict[str, int] = {}
    for i, name in enumerate(names):
        key = name.lower()
        if key in positions:
            raise InputFileError(source, f"duplicate column {quote(name)}")
        positions[key] = i
    if "ts" in positions and "timestamp" in positions:
        raise InputFileError(source, "both 'ts' and 'timestamp' columns: which is the time?")
    if "timestamp" in positions:
        positions["ts"] = positions.pop("timestamp")
    series = not any(role in positions for role in NAME_ROLES)
    required = ("ts", "value") if series else (*NAME_ROLES, "ts", "value")
    missing = [role for role in required if role not in positions]
    if missing:
        raise InputFileError(
            source,
            f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
            f" (found {summary(names)}; expected tenant, service, metric, ts, value[, tags]"
            " or timestamp, value)",
        )
    roles = {role: positions[role] for role in (*required, "tags") if role in positions}
    taken = set(roles.values())
    extras = tuple(i for i in range(len(names)) if i not in taken)
    path_names = path_names_of(path, root, source) if series else None
    return Layout(names, roles, extras, path_names)


def path_names_of(path: Path, root: Path | None, source: str) -> dict[str, str]:
    folders: list[str] = []
    if root is not None:
        relative = source_name(path, root)
        if not Path(relative).is_absolute():
            folders = list(Path(relative).parts[:-1])
    if len(folders) > 2:
        raise InputFileError(
            source,
            "single-series file nested too deep: expected <root>/<tenant>/<service>/<metric>.csv",
        )
    tenant, service = [DEFAULT_NAME] * (2 - len(folders)) + folders
    names = {"tenant": tenant, "service": service, "metric": stem(path)}
    for role, name in names.items():
        if not is_valid_name(name):
            raise InputFileError(
                source, f"{role} {quote(name)} taken from the path is not a valid name"
            )
    return names


def file_format(path: Path, source: str) -> str:
    lowered = path.name.lower()
    for suffix, kind in _FORMATS:
        if lowered.endswith(suffix):
            return kind
    raise InputFileError(
        source,
        f"unsupported file type {quote(''.join(path.suffixes) or path.name)}"
        " (expected .csv, .csv.gz, .parquet or .pq)",
    )


def stem(path: Path) -> str:
    lowered = path.name.lower()
    for suffix, _ in _FORMATS:
        if lowered.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem
