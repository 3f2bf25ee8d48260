"""What the person paged reads, and the identity rules that keep one anomaly one Alertmanager alert."""

from __future__ import annotations

import orjson
import pytest

from streamdet.alertmanager.openalerts import OpenAlerts
from streamdet.alertmanager.translate import MalformedAlert, parse, severity, summary, to_alertmanager
from streamdet.config import load_config

from .helpers import alert_message

T = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def am_cfg(*overrides: str):
    return load_config(None, ["alertmanager.urls=[http://am:9093]", *overrides]).alertmanager


def test_the_summary_names_entity_how_far_over_since_when_and_the_channels_in_words():
    alert = parse(alert_message("machine-1-2", "firing", T, T + 5, score=7.2, threshold=3.1))
    assert summary(alert) == ("machine-1-2: anomaly score 7.2 is 2.3x its threshold 3.1 since 2023-11-14 22:13:20 UTC; "
                              "top channels cpu_r 61 %, load_1 22 %")


def test_severity_is_the_highest_level_reached_and_the_lowest_below_all():
    levels = {"critical": 3.0, "warning": 1.5, "info": 0.0}
    assert [severity(r, levels) for r in (0.5, 1.0, 1.5, 2.9, 3.0, 50)] == [
        "info", "info", "warning", "warning", "critical", "critical"]
    assert severity(0.5, {"page": 2.0, "ticket": 1.0}) == "ticket"


def test_labels_annotations_and_times_of_a_firing_and_a_resolved_alert():
    cfg = am_cfg("alertmanager.labels={team: sre, entity: overridden}", "alertmanager.resend_interval_s=30",
                 "alertmanager.grafana_url=https://g/d/x?var-entity={entity}")
    firing = to_alertmanager(parse(alert_message("rack 1/a", "firing", T, T + 5)), cfg, now=T + 10)
    assert firing["labels"] == {"team": "sre", "alertname": "StreamdetAnomaly", "entity": "rack 1/a",
                                "model": "lstm_ae", "severity": "critical",
                                "alert_id": orjson.loads(alert_message("rack 1/a", "firing", T, T + 5))["alert_id"]}
    assert firing["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert firing["endsAt"] == "2023-11-14T22:15:30.000Z"  # now + 4 resend intervals
    assert firing["generatorURL"] == "https://g/d/x?var-entity=rack%201%2Fa"
    assert firing["annotations"]["top_channels"] == "cpu_r 61 %, load_1 22 %"
    resolved = to_alertmanager(parse(alert_message("rack 1/a", "resolved", T, T + 60)), cfg, now=T + 70)
    assert resolved["endsAt"] == "2023-11-14T22:14:20.000Z" and "was 3.0x" in resolved["annotations"]["summary"]


def test_a_resolve_ends_the_alert_its_firing_event_opened_even_when_its_score_changes_the_severity():
    store = OpenAlerts(am_cfg())
    fired = store.apply(parse(alert_message("m", "firing", T, T + 1, score=4.0, threshold=2.0)), partition=0)
    assert fired["severity"] == "warning" and len(store) == 1
    peak = parse(alert_message("m", "resolved", T, T + 50, score=9.0, threshold=2.0))  # the episode's peak: critical
    assert store.apply(peak, partition=0) == fired and len(store) == 0
    assert store.apply(peak, partition=0) == fired  # redelivered resolve: same identity
    assert store.apply(parse(alert_message("m", "firing", T, T + 1)), partition=0) is None  # no reopening
    assert len(store) == 0


def test_open_alerts_of_revoked_partitions_are_dropped():
    store = OpenAlerts(am_cfg())
    store.apply(parse(alert_message("a", "firing", T, T + 1)), partition=0)
    store.apply(parse(alert_message("b", "firing", T, T + 1)), partition=1)
    store.drop_partitions([1])
    assert [o.message.entity for o in store.open_alerts()] == ["a"]


@pytest.mark.parametrize("raw, reason, words", [
    (b"\xff\xfe", "not_json", ""),
    (b"[1, 2]", "not_object", "list"),
    (b'{"alert_id": "x", "status": "open"}', "bad_field", "status"),
    (orjson.dumps(orjson.loads(alert_message("m", "firing", T, T)) | {"score": "7"}), "bad_field", "score"),
    (orjson.dumps(orjson.loads(alert_message("m", "firing", T, T)) | {"top_channels": [{"name": 1}]}),
     "bad_field", "top_channels"),
    (orjson.dumps(orjson.loads(alert_message("m", "firing", T, T)) | {"entity": ""}), "bad_field", "entity"),
    (alert_message("m", "firing", T, T * 1000), "bad_field", "ts"),  # milliseconds: year 55,800
    (alert_message("m", "resolved", -1e20, T), "bad_field", "start_ts"),
])
def test_malformed_messages_name_what_is_wrong(raw, reason, words):
    with pytest.raises(MalformedAlert) as err:
        parse(raw)
    assert err.value.reason == reason and words in err.value.detail


def test_times_stamped_ahead_of_the_bridge_clock_are_clamped_to_it():
    """A host whose clock runs ahead stamps its events in the future; Alertmanager keeps an alert firing until its
    endsAt, so a resolve must end it now, not when the host's clock says."""
    cfg = am_cfg("alertmanager.resend_interval_s=30")
    ahead = 3600.0
    firing = to_alertmanager(parse(alert_message("m", "firing", T + ahead, T + ahead + 5)), cfg, now=T)
    assert firing["startsAt"] == "2023-11-14T22:13:20.000Z" and firing["endsAt"] == "2023-11-14T22:15:20.000Z"
    resolved = to_alertmanager(parse(alert_message("m", "resolved", T + ahead, T + ahead + 60)), cfg, now=T)
    assert resolved["startsAt"] == resolved["endsAt"] == "2023-11-14T22:13:20.000Z"
