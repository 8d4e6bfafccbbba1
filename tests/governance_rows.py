"""One plausible row for any warehouse table, for the retention and purge tests: every table with
a tenant column gets rows without the tests naming its columns, so a table added later is covered
by them too."""

from datetime import datetime

import sqlalchemy as sa

from monitoring_pipelines.warehouse import metadata


def row_for(table: sa.Table, tenant: str, at: datetime, n: int = 0, **values) -> dict:
    """A row of ``table`` for ``tenant`` with every time column at ``at``; ``n`` keeps keys
    unique; ``values`` override."""
    row = {}
    for column in table.columns:
        if column.name == "id":
            continue
        kind = column.type
        if column.name == "tenant":
            row[column.name] = tenant
        elif column.name == "partition_key":
            row[column.name] = f"{at:%Y-%m-%d}|{tenant}"
        elif isinstance(kind, sa.DateTime):
            row[column.name] = at
        elif isinstance(kind, sa.Boolean):
            row[column.name] = False
        elif isinstance(kind, sa.Float):
            row[column.name] = 1.0
        elif isinstance(kind, sa.Integer):
            row[column.name] = n
        elif isinstance(kind, sa.LargeBinary):
            row[column.name] = b"x"
        else:
            length = getattr(kind, "length", None) or 64
            row[column.name] = f"{tenant}-{column.name}-{at:%Y%m%d}-{n}"[:length]
    row.update(values)
    return row


def tenant_tables() -> list[sa.Table]:
    """Every warehouse table with a tenant column (the audit trail aside: it is kept)."""
    return [t for t in metadata.sorted_tables if "tenant" in t.c and t.name != "audit"]


def insert(engine: sa.Engine, table: sa.Table, rows: list[dict]) -> None:
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)


def count(engine: sa.Engine, table: sa.Table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar()
