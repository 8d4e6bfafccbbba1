"""The README's map of the code ("Where things live in the code") sends a newcomer to files that
exist, in one hop for the changes people come to make."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "monitoring_pipelines"
# A backticked name is a path when it has a folder in it or a file's ending.
_PATH = re.compile(r"^[\w./-]+(/|\.(py|ya?ml|html|txt|md))$|^[\w.-]+/[\w./-]*$")
# The changes the map must answer with a row of their own.
ONE_HOP = (
    "add a receiver",
    "add a detector",
    "add a quality check",
    "change routing",
    "change severity",
    "add a CLI command",
)


def code_map() -> dict[str, str]:
    """The rows of the map: what to change -> where to go."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Where things live in the code\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in ("to change", "---"):
            rows[cells[0]] = cells[1]
    return rows


def paths(cell: str) -> list[str]:
    return [name for name in re.findall(r"`([^`]+)`", cell) if _PATH.match(name)]


def resolve(name: str, earlier: list[Path]) -> Path | None:
    """Where ``name`` is: from the repository, the package, or a folder an earlier path of the
    same row named (``checks/base.py`` after ``monitoring_pipelines/quality/checks/``)."""
    bases = [ROOT, PACKAGE]
    for found in earlier:
        folder = found if found.is_dir() else found.parent
        bases += [folder, *folder.parents]
    return next((base / name for base in bases if (base / name).exists()), None)


def test_every_path_in_the_code_map_exists():
    rows = code_map()
    assert len(rows) > 10
    missing = []
    for change, where in rows.items():
        earlier: list[Path] = []
        for name in paths(where):
            found = resolve(name, earlier)
            if found is None:
                missing.append(f"{change}: {name}")
            else:
                earlier.append(found)
    assert not missing, missing


def test_the_common_changes_are_one_hop_each():
    rows = code_map()
    for change in ONE_HOP:
        assert change in rows, f"no row for {change!r}"
        first = paths(rows[change])[0]
        assert (ROOT / first).exists(), f"{change}: {first} is not a path from the repository"
        assert first.startswith("monitoring_pipelines/"), (change, first)
