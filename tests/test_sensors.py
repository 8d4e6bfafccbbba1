"""The file-drop sensor decides from the data: what the CLI already ingested is not staged again,
whatever the sensor's cursor says (an empty cursor on a daemon's first start)."""

import os
import time
from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from monitoring_pipelines.definitions import build_defs
from monitoring_pipelines.ingest import stage_file
from monitoring_pipelines.settings import load_settings
from monitoring_pipelines.sources.demo import DemoConfig, generate, write_demo
from monitoring_pipelines.warehouse import Warehouse


def test_file_drop_sensor_skips_files_ingested_with_the_same_content(home):
    settings = load_settings()
    settings.ensure_dirs()
    defs = build_defs(settings)
    drop = settings.drop_dir
    write_demo(generate(DemoConfig(tenants=("acme",), days=2)), drop)
    path = drop / "acme.parquet"
    warehouse = Warehouse(settings.warehouse_url)
    stage_file(warehouse, path, root=drop, earliest=datetime(2026, 9, 1, tzinfo=UTC))
    old = time.time() - 60
    os.utime(path, (old, old))
    sensor = defs.resolve_sensor_def("file_drop_sensor")
    with dg.instance_for_test() as instance:

        def tick(cursor=None):
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor, resources=defs.resources
            )
            return sensor(context)

        # Staged but not yet gated (a crash in between): staged again, so its ingest resumes.
        assert [r.tags["monitoring/source"] for r in tick().run_requests] == ["acme.parquet"]
        warehouse.mark_ingested("acme.parquet")
        first = tick()
        assert first.run_requests == []
        assert "1 already ingested with the same content" in first.skip_reason.skip_message
        # New content under the same name is staged.
        pd.read_parquet(path).head(100).to_parquet(path)
        os.utime(path, (old + 1, old + 1))
        changed = tick(first.cursor)
        assert [r.tags["monitoring/source"] for r in changed.run_requests] == ["acme.parquet"]
    warehouse.dispose()
