"""The audit trail: every writer leaves one entry (who, what, before, after, why), the table
refuses changes on PostgreSQL, and ``monitoring-pipelines audit`` prints and filters it."""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from monitoring_pipelines.alerting import store, types
from monitoring_pipelines.alerting.policy import TenantSettings, loads_policy
from monitoring_pipelines.alerting.policy_file import default_policy_text
from monitoring_pipelines.alerting.service import deliver
from monitoring_pipelines.cli import main
from monitoring_pipelines.warehouse import Warehouse, audit
from monitoring_pipelines.warehouse.schema import audit as audit_table
from tests.alerting.conftest import score_frame
from tests.alerting.test_store import STRETCHES


def _incidents(warehouse) -> list[str]:
    from monitoring_pipelines.alerting.incidents import detect_incidents

    incidents = detect_incidents(
        score_frame(STRETCHES), TenantSettings(), run_id="r0", partition_key="2026-10-05|acme"
    )
    store.upsert_incidents(warehouse, incidents)
    return [i.fingerprint for i in incidents]


def test_acknowledge_resolve_and_false_positive_are_audited(warehouse):
    _, night = _incidents(warehouse)  # the night's incident is still firing
    store.acknowledge(warehouse, night, by="alice")
    store.mark_false_positive(warehouse, night, "deploy, expected", by="bob")
    store.resolve(warehouse, night, by="carol")

    (ack,) = audit.read(warehouse.engine, action=audit.ACKNOWLEDGE)
    assert (ack.actor, ack.tenant, ack.target) == ("alice", "acme", f"incident {night}")
    assert (ack.before["status"], ack.after["status"]) == (types.FIRING, types.ACKNOWLEDGED)
    (fp,) = audit.read(warehouse.engine, action=audit.FALSE_POSITIVE)
    assert (fp.actor, fp.after["feedback"], fp.reason) == (
        "bob",
        "false_positive",
        "deploy, expected",
    )
    assert fp.before["feedback"] is None
    (res,) = audit.read(warehouse.engine, action=audit.RESOLVE)
    assert (res.actor, res.before["status"], res.after["status"]) == (
        "carol",
        types.ACKNOWLEDGED,
        types.RESOLVED,
    )


def test_the_audit_table_refuses_updates_and_deletes_on_postgresql(warehouse):
    audit.record(warehouse.engine, actor="alice", action=audit.ROLLBACK, tenant="acme")
    assert not any(hasattr(audit, name) for name in ("update", "delete", "remove"))
    if warehouse.dialect != "postgresql":
        return
    for statement in (audit_table.update().values(actor="mallory"), audit_table.delete()):
        with (
            pytest.raises(sa.exc.DBAPIError, match="append-only"),
            warehouse.engine.begin() as conn,
        ):
            conn.execute(statement)
    assert audit.read(warehouse.engine)[0].actor == "alice"


def test_a_changed_alerting_policy_is_audited_once_with_what_changed(warehouse, home):
    home.mkdir(parents=True)
    policy = loads_policy(default_policy_text(), home=home)
    deliver(warehouse, policy)
    deliver(warehouse, policy)  # same content: nothing new
    (first,) = audit.read(warehouse.engine, action=audit.POLICY_CHANGE)
    assert first.actor == "pipeline" and first.before is None

    changed = default_policy_text() + (
        "silences:\n  - {matchers: [tenant=acme], starts: 2026-10-01T00:00:00Z, "
        "ends: 2026-10-01T06:00:00Z}\n"
    )
    deliver(warehouse, loads_policy(changed, home=home))
    entries = audit.read(warehouse.engine, action=audit.POLICY_CHANGE)
    assert len(entries) == 2
    assert entries[1].before["hash"] == first.after["hash"] != entries[1].after["hash"]
    assert entries[1].after["changed"] == ["silences"]
    assert "changed: silences" in entries[1].reason


def _clean_history(warehouse, days: int = 35) -> None:
    ts = pd.date_range("2026-10-01", periods=days * 288, freq="5min", tz="UTC")
    rng = np.random.default_rng(3)
    value = 50 + 10 * np.sin(2 * np.pi * ts.hour / 24) + rng.normal(0, 1, len(ts))
    frame = pd.DataFrame(
        {"tenant": "acme", "service": "api", "metric": "cpu_percent", "ts": ts, "value": value}
    ).assign(is_gap=False, n_raw=1)
    warehouse.replace_partition(
        "clean_metrics", "acme", ts[0], ts[-1] + pd.Timedelta("5min"), frame
    )


@pytest.mark.slow  # two z-score trainings logged to MLflow: about 27 s on the shared machine
def test_training_decisions_and_rollback_are_audited(home):
    from monitoring_pipelines.ml.model_audit import rollback_champion
    from monitoring_pipelines.ml.registry import ModelRegistry
    from monitoring_pipelines.ml.train_and_promote import train_tenant

    home.mkdir(parents=True)
    warehouse = Warehouse(f"sqlite:///{home / 'warehouse.db'}")
    models = ModelRegistry(f"sqlite:///{home / 'mlflow.db'}", home / "mlartifacts")
    _clean_history(warehouse)
    labels = home / "labels.json"
    first = train_tenant("zscore", "acme", warehouse, labels, 300, models, shadow_days=0)
    second = train_tenant("zscore", "acme", warehouse, labels, 300, models, shadow_days=0)
    decisions = audit.read(warehouse.engine, tenant="acme")
    assert [e.action for e in decisions] == [first.action, second.action]
    assert all(e.actor == "pipeline" for e in decisions)
    assert decisions[1].before["champion"] == (first.version if first.promoted else None)
    if not (first.promoted and second.promoted):
        pytest.fail(f"both candidates should be champion on the same data: {decisions}")
    assert rollback_champion(
        warehouse, models, "zscore", "acme", by="erin", reason="alert storm"
    ) == (second.version, first.version)
    (rollback,) = audit.read(warehouse.engine, action=audit.ROLLBACK)
    assert (rollback.actor, rollback.reason) == ("erin", "alert storm")
    assert (rollback.before, rollback.after) == (
        {"champion": second.version},
        {"champion": first.version},
    )
    warehouse.dispose()


def test_the_audit_command_prints_and_filters_what_the_alerts_command_did(home, capsys):
    home.mkdir(parents=True)
    warehouse = Warehouse(f"sqlite:///{home / 'warehouse.db'}")
    _, first = _incidents(warehouse)
    audit.record(warehouse.engine, actor="pipeline", action=audit.ROLLBACK, tenant="globex")
    assert main(["alerts", "ack", first[:8], "--by", "alice"]) == 0
    capsys.readouterr()

    assert main(["audit", "--tenant", "acme"]) == 0
    out = capsys.readouterr().out
    assert f"alice alert.acknowledge tenant=acme target=incident {first}" in out
    assert '"status": "firing"' in out and "globex" not in out
    assert main(["audit", "--action", "model.rollback", "--limit", "1"]) == 0
    assert "pipeline model.rollback tenant=globex" in capsys.readouterr().out
    since = datetime.now(UTC).replace(year=2100).date().isoformat()
    assert main(["audit", "--since", since]) == 0
    assert capsys.readouterr().out.strip() == "no audit entries match"
    assert main(["audit", "--action", "nonsense"]) == 2
    assert "--action 'nonsense'" in capsys.readouterr().err
    warehouse.dispose()
