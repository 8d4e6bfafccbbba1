"""Partitions: one per UTC day and tenant.

Tenants are dynamic: the configured ones are added by the sensors and the CLI, and a tenant that
first appears in a dropped file gets its partitions when that file is staged, without a code change.
"""

import dagster as dg

from monitoring_pipelines.settings import load_settings

TENANTS = "tenants"

tenant_partitions = dg.DynamicPartitionsDefinition(name=TENANTS)
day_partitions = dg.DailyPartitionsDefinition(
    start_date=load_settings().start_date, end_offset=1, timezone="UTC"
)
tenant_day_partitions = dg.MultiPartitionsDefinition(
    {"date": day_partitions, "tenant": tenant_partitions}
)


def tenant_day_key(date: str, tenant: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": date, "tenant": tenant})


def missing_tenants(
    instance: dg.DagsterInstance, tenants: list[str] | tuple[str, ...]
) -> list[str]:
    known = set(instance.get_dynamic_partitions(TENANTS))
    return sorted({t for t in tenants if t not in known})
