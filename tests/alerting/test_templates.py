"""Notification text: complete catalogs, real translations, provenance and escaped HTML."""

import re

import pytest

from monitoring_pipelines import i18n
from monitoring_pipelines.alerting import templates, types, wording
from tests.alerting.servers import sample_incident

LOCALES = i18n.LOCALES
INCIDENT_KINDS = (types.ANOMALY, types.DATA_QUALITY, types.PIPELINE_FAILURE)


def payload(event="trigger", **kwargs):
    incident = sample_incident(**kwargs)
    return types.notification_payload(incident, event, "http://dagster.local:3000")


def test_every_catalog_has_exactly_the_english_keys_and_placeholders():
    reference = wording.catalog("en")
    for locale in LOCALES:
        messages = wording.catalog(locale)
        assert set(messages) == set(reference), (
            f"{locale}: missing {sorted(set(reference) - set(messages))}, "
            f"extra {sorted(set(messages) - set(reference))}"
        )
        for key, text in reference.items():
            assert i18n.placeholders(messages[key]) == i18n.placeholders(text), (
                locale,
                key,
            )
            assert messages[key].strip(), (locale, key)


def test_translations_are_translations():
    english = wording.catalog("en")
    for locale in ("fr", "de", "es", "it"):
        messages = wording.catalog(locale)
        for key in english:
            if key.startswith(("severity.", "event.", "next_step.", "intro.", "link.")):
                assert messages[key] != english[key], f"{locale}: {key} is still English"
    assert wording.catalog("de")["severity.critical"] == "Kritisch"
    assert wording.catalog("fr")["event.resolve"] == "Résolu"
    assert wording.catalog("es")["severity.high"] == "Alta"
    assert wording.catalog("it")["event.escalate"] == "Escalato"


@pytest.mark.parametrize("locale", LOCALES)
def test_every_event_and_kind_renders_strictly_without_raw_keys(locale):
    raw_key = re.compile(
        r"\b(severity|event|kind|status|title|intro|label|link|next_step)\.[a-z_]+\b"
    )
    for event in templates.EVENTS:
        for kind in INCIDENT_KINDS:
            status = "resolved" if event == "resolve" else "firing"
            message = templates.render(
                payload(event, kind=kind, status=status), locale, strict=True
            )
            for text in (message.title, message.text, message.html, message.next_step):
                assert not raw_key.search(text), (locale, event, kind, text)
            assert message.severity_text in message.title or event == "resolve"
            assert message.locale == locale


def test_missing_key_raises_instead_of_showing_it():
    with pytest.raises(i18n.MissingTranslation):
        wording.Translator("fr", strict=True)("next_step.nonexistent")
    with pytest.raises(i18n.MissingTranslation):
        wording.Translator("fr")("next_step.nonexistent")


def test_message_carries_its_provenance():
    message = templates.render(payload(), "en")
    for needle in (
        "acme",
        "api",
        "latency_p95_ms",
        "error_rate",
        "1,834",  # the peak value
        "7.25",  # the score
        "3.10",  # the threshold
        "isolation_forest v3",
        "lstm v2",
        "prophet v1",
        "2026-10-05|acme",
        "http://dagster.local:3000/runs/0f8e-run-42",
        "http://dagster.local:3000/assets/anomaly_scores?view=partitions&partition=2026-10-05%7Cacme",
        "2026-10-05 14:05 UTC",
    ):
        assert needle in message.text, needle
        assert needle in message.html.replace("&amp;", "&"), needle
    assert message.title == "[High] Anomaly in acme/api: latency_p95_ms, error_rate"
    assert [label for label, _ in message.links] == [
        "Open the Dagster run",
        "Open the scored partition",
    ]


def test_german_message_uses_german_words_and_numbers():
    message = templates.render(payload(), "de")
    assert message.title.startswith("[Hoch] Anomalie in acme/api")
    assert "Empfohlener nächster Schritt" in message.text
    assert "1.834" in message.text and "7,25" in message.text
    assert "Deployments" in message.next_step


def test_html_is_autoescaped_and_text_is_not():
    message = templates.render(payload(summary='<script>alert("x")</script> & co'), "en")
    assert "<script>" not in message.html
    assert "&lt;script&gt;" in message.html
    assert '<script>alert("x")</script> & co' in message.text


@pytest.mark.parametrize(
    ("kind", "metric", "event", "expected"),
    [
        ("anomaly", "latency_p95_ms", "trigger", "recent deploys"),
        ("anomaly", "startup_latency_p95_ms", "trigger", "upstream dependencies"),
        ("anomaly", "error_rate", "trigger", "error logs"),
        ("anomaly", "auth_failures", "trigger", "identity provider"),
        ("anomaly", "cpu_percent", "trigger", "headroom"),
        ("anomaly", "buffering_ratio", "trigger", "CDN"),
        ("anomaly", "cache_hit_ratio", "escalate", "cache cluster"),
        ("anomaly", "skip_rate", "repeat", "recommendation model"),
        ("anomaly", "requests_per_second", "trigger", "retry storm"),
        ("anomaly", "queue_depth", "trigger", "same hour last week"),
        ("data_quality", "error_rate", "trigger", "quarantine and the validation report"),
        ("pipeline_failure", "latency_p95_ms", "trigger", "run's logs"),
        ("anomaly", "latency_p95_ms", "resolve", "No action needed"),
    ],
)
def test_next_step_fits_the_metric_and_kind(kind, metric, event, expected):
    status = "resolved" if event == "resolve" else "firing"
    message = templates.render(payload(event, kind=kind, metric=metric, status=status), "en")
    assert expected in message.next_step
    assert message.next_step in message.text


def test_resolve_is_green_and_says_resolved_in_every_locale():
    words = {"en": "Resolved", "fr": "Résolu", "de": "Behoben", "es": "Resuelta", "it": "Risolto"}
    for locale, word in words.items():
        message = templates.render(payload("resolve", status="resolved"), locale)
        assert message.title.startswith(f"[{word}]")
        assert message.color == wording.RESOLVED_COLOR


def test_locale_variants_fall_back_sensibly():
    assert i18n.normalize_locale("fr-CA") == "fr"
    assert i18n.normalize_locale("de_AT") == "de"
    assert i18n.normalize_locale("pt-BR") == "en"
    assert templates.render(payload(), "es-MX").title.startswith("[Alta] Anomalía")


def test_pipeline_failure_without_metrics_names_the_partition():
    incident = types.incident_to_dict(sample_incident(kind="pipeline_failure"))
    incident["metrics"] = []
    incident["labels"].pop("metric")
    message = templates.render(
        {"event": "trigger", "incident": incident, "links": {"run": "http://d/runs/1"}}, "fr"
    )
    assert message.title == "[Élevée] Échec du pipeline sur acme/api : 2026-10-05|acme"
    assert "journaux de l'exécution" in message.next_step
    assert message.metrics == ()
