"""Which files hold metric data: one rule for the drop-folder sensor, ``ingest`` and
``backtest``."""

from pathlib import Path

DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


def is_data_file(path: Path) -> bool:
    """A CSV (optionally gzipped) or Parquet file; hidden files (editor and lock files) are not."""
    return (
        path.is_file()
        and path.name.lower().endswith(DATA_SUFFIXES)
        and not path.name.startswith(".")
    )


def data_files(folder: Path) -> list[Path]:
    """Every data file below ``folder``, sorted; none when it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if is_data_file(p))
