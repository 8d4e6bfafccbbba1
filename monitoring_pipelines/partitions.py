"""Partitions: one per UTC day and tenant.

Tenants are dynamic: the configured ones are added by the sensors and the CLI, and a tenant that
first appears in a dropped file gets its partitions when that file is staged, without a code change.

The day dimension starts at the settings' ``start_date``. Nothing here reads settings at import:
assets are declared with the partitions of the default start date, and ``build_defs(settings)``
binds them to its own settings' start date with :func:`bind_start_date`.
"""

import functools

import dagster as dg

from monitoring_pipelines.settings import DEFAULT_START_DATE

TENANTS = "tenants"

tenant_partitions = dg.DynamicPartitionsDefinition(name=TENANTS)


@functools.cache
def tenant_day_partitions_from(start_date: str) -> dg.MultiPartitionsDefinition:
    """Day (UTC, from ``start_date``) x tenant partitions."""
    days = dg.DailyPartitionsDefinition(start_date=start_date, end_offset=1, timezone="UTC")
    return dg.MultiPartitionsDefinition({"date": days, "tenant": tenant_partitions})


# What the asset modules declare; build_defs rebinds it to the settings' start date.
tenant_day_partitions = tenant_day_partitions_from(DEFAULT_START_DATE)


def bind_start_date(assets: dg.AssetsDefinition, start_date: str) -> dg.AssetsDefinition:
    """``assets`` with its day x tenant partitions starting at ``start_date`` (others unchanged)."""
    partitions = tenant_day_partitions_from(start_date)

    def rebind(spec: dg.AssetSpec) -> dg.AssetSpec:
        if isinstance(spec.partitions_def, dg.MultiPartitionsDefinition):
            return spec.replace_attributes(partitions_def=partitions)
        return spec

    return assets.map_asset_specs(rebind)


def tenant_day_key(date: str, tenant: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": date, "tenant": tenant})


def missing_tenants(
    instance: dg.DagsterInstance, tenants: list[str] | tuple[str, ...]
) -> list[str]:
    known = set(instance.get_dynamic_partitions(TENANTS))
    return sorted({t for t in tenants if t not in known})
