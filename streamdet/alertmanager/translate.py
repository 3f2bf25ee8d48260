"""An alert message of the alerts topic (DESIGN.md §4) -> one Alertmanager API v2 alert, and what the paged person
reads in it.

Identity: Alertmanager identifies an alert by its label set, so the labels are a pure function of the firing event:
alertname, entity, model, severity (from the firing event's score/threshold ratio) and alert_id (one episode of one
entity; a later episode is a new alert). A redelivered or re-posted event therefore updates the same Alertmanager
alert instead of adding one. A resolved event is posted with the labels of its firing event (the bridge keeps them;
see openalerts.py) so that it ends that alert and no other.
"""

from __future__ import annotations

import math
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

ALERTNAME = "StreamdetAnomaly"
STATUSES = ("firing", "resolved")
ENDS_AFTER_RESENDS = 4  # a firing alert's endsAt: 4 resend intervals ahead (Prometheus' rule), so a dead bridge's
# alerts resolve by themselves instead of paging forever


class MalformedAlert(ValueError):
    """A message of the alerts topic the bridge cannot use; `reason` is a short bounded label."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class AlertMessage:
    alert_id: str
    status: str
    entity: str
    start_ts: float
    ts: float
    score: float
    threshold: float
    top_channels: tuple[tuple[str, float], ...]
    model: str

    @property
    def ratio(self) -> float:
        """How many times the threshold the score is (inf for a non-positive threshold under a positive score)."""
        if self.threshold > 0:
            return self.score / self.threshold
        return math.inf if self.score > self.threshold else 1.0


def _number(message: dict, key: str) -> float:
    value = message.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MalformedAlert("bad_field", f"{key} must be a finite number, got {value!r}")
    return float(value)


def _timestamp(message: dict, key: str) -> float:
    """A Unix time in seconds that has a date: milliseconds (year 55,000) or a garbage value would otherwise pass as
    finite and crash the bridge where it writes the date, on every redelivery."""
    value = _number(message, key)
    try:
        datetime.fromtimestamp(value, timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise MalformedAlert("bad_field", f"{key} must be a Unix time in seconds (years 1-9999), got {value!r}") \
            from None
    return value


def _text(message: dict, key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedAlert("bad_field", f"{key} must be a non-empty string, got {value!r}")
    return value


def _channels(value: Any) -> tuple[tuple[str, float], ...]:
    if not isinstance(value, list):
        raise MalformedAlert("bad_field", f"top_channels must be a list, got {value!r}")
    out = []
    for item in value:
        share = item.get("share") if isinstance(item, dict) else None
        if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                and isinstance(share, (int, float)) and not isinstance(share, bool) and math.isfinite(share)):
            raise MalformedAlert("bad_field", f"top_channels: expected {{name, share}} items, got {item!r}")
        out.append((item["name"], float(share)))
    return tuple(out)


def parse(raw: bytes) -> AlertMessage:
    """Validate one alerts-topic value; MalformedAlert (reason not_json | not_object | bad_field) otherwise."""
    import orjson

    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedAlert("not_json", str(exc)) from None
    if not isinstance(message, dict):
        raise MalformedAlert("not_object", f"expected a JSON object, got {type(message).__name__}")
    alert_id = _text(message, "alert_id")
    status = message.get("status")
    if status not in STATUSES:
        raise MalformedAlert("bad_field", f"status must be firing or resolved, got {status!r}")
    entity = _text(message, "entity")
    model = message.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise MalformedAlert("bad_field", f"model must be an object with a name, got {model!r}")
    return AlertMessage(alert_id=alert_id, status=status, entity=entity, start_ts=_timestamp(message, "start_ts"),
                        ts=_timestamp(message, "ts"), score=_number(message, "score"),
                        threshold=_number(message, "threshold"),
                        top_channels=_channels(message.get("top_channels", [])), model=model["name"])


def severity(ratio: float, levels: dict) -> str:
    """The level with the highest minimum ratio that `ratio` reaches; the lowest level below all of them."""
    ordered = sorted(levels.items(), key=lambda item: item[1])
    chosen = ordered[0][0]
    for name, minimum in ordered:
        if ratio >= minimum:
            chosen = name
    return chosen


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def channels_text(channels) -> str:
    """`cpu_r 61 %, load_1 22 %`: the top channels and their shares of the anomaly, in words."""
    return ", ".join(f"{name} {share * 100:.0f} %" for name, share in channels) or "no channel stands out"


def summary(alert: AlertMessage) -> str:
    """One line for the person paged: which entity, how far over the threshold, since when, which channels."""
    since = datetime.fromtimestamp(alert.start_ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    ratio = alert.ratio
    how_far = f"{ratio:.1f}x its threshold" if math.isfinite(ratio) else "over its threshold"
    verb = "was" if alert.status == "resolved" else "is"
    return (f"{alert.entity}: anomaly score {alert.score:.3g} {verb} {how_far} {alert.threshold:.3g} "
            f"since {since}; top channels {channels_text(alert.top_channels)}")


def labels(alert: AlertMessage, am_cfg) -> dict[str, str]:
    """The alert's identity (see the module docstring); configured labels never override it."""
    own = {"alertname": ALERTNAME, "entity": alert.entity, "model": alert.model,
           "severity": severity(alert.ratio, am_cfg.severity), "alert_id": alert.alert_id}
    return {**{str(k): str(v) for k, v in am_cfg.labels.items()}, **own}


def annotations(alert: AlertMessage) -> dict[str, str]:
    return {"summary": summary(alert), "score": f"{alert.score:.6g}", "threshold": f"{alert.threshold:.6g}",
            "ratio": f"{alert.ratio:.3g}", "top_channels": channels_text(alert.top_channels),
            "since": rfc3339(alert.start_ts)}


def to_alertmanager(alert: AlertMessage, am_cfg, now: float, firing_labels: dict | None = None) -> dict:
    """The API v2 alert for an event. Firing: endsAt some resends ahead; resolved: endsAt = the event's ts, and the
    firing event's labels when known (the identity to end). Times ahead of the bridge's clock (a host whose clock
    runs ahead) are taken as now: Alertmanager keeps an alert firing until its endsAt, even a resolved one."""
    starts = min(alert.start_ts, now)
    if alert.status == "firing":
        ends = now + ENDS_AFTER_RESENDS * am_cfg.resend_interval_s
    else:
        ends = min(alert.ts, now)
    out = {"labels": firing_labels or labels(alert, am_cfg), "annotations": annotations(alert),
           "startsAt": rfc3339(starts), "endsAt": rfc3339(ends)}
    if am_cfg.grafana_url:
        out["generatorURL"] = am_cfg.grafana_url.replace("{entity}", urllib.parse.quote(alert.entity, safe=""))
    return out
