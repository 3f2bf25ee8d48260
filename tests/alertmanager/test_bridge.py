"""The bridge against a real Alertmanager (Debian's prometheus-alertmanager) and the real embedded broker.

Alert messages are produced as the daemon writes them (pipeline.alerts.AlertEvent); test_daemon_to_alertmanager.py
runs the daemon itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import orjson
import pytest

from streamdet.alertmanager.translate import parse, to_alertmanager
from streamdet.config import load_config
from streamdet.io.broker import EmbeddedBroker, free_port
from streamdet.io.admin import ensure_topics
from streamdet.io.producer import Producer
from tests.conftest import REPO, wait_until
from tests.integration.helpers import read_topic

from .helpers import Alertmanager, BodyLimitProxy, BridgeProcess, Webhook, alert_message, http

pytestmark = [pytest.mark.kafka]

OUTAGE_S = 20.0  # how long Alertmanager stays down (the scenario)


def produce(bootstrap: str, topic: str, messages: list[tuple[str, bytes]]) -> None:
    producer = Producer(load_config(None, ["kafka.partitions=2"]).kafka.at(bootstrap))
    for key, value in messages:
        producer.produce(topic, key.encode(), value)
    producer.flush()
    producer.close()


def committed(bootstrap: str, group: str) -> int:
    """Records of the alerts topic the group has committed (the sum of its committed offsets)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return sum(meta.offset for meta in admin.list_group_offsets(group).get(group, {}).values()
                   if meta.offset > 0)
    finally:
        admin.close()


def entities(am: Alertmanager) -> set[str]:
    return {a["labels"]["entity"] for a in am.alerts()}


def make_topics(bootstrap: str, names: dict) -> dict:
    ensure_topics(load_config(None, ["kafka.partitions=2"]).kafka.at(bootstrap), [names["alerts"], names["dlq"]])
    return names


@pytest.fixture
def topics(broker, names):
    return make_topics(broker.bootstrap, names)


def test_outage_restart_and_bridge_restart_end_with_the_open_alerts_of_an_uninterrupted_run(broker, topics,
                                                                                             tmp_path):
    now = time.time()
    hook = Webhook()
    reference = Alertmanager(tmp_path, hook.url, name="reference")  # never interrupted
    port = free_port()  # the interrupted one is not running yet: the bridge must retry an unreachable URL
    ref_bridge = BridgeProcess(broker.bootstrap, topics, [reference.url], tmp_path / "ref.log", group="ref")
    bridge = BridgeProcess(broker.bootstrap, topics, [f"http://127.0.0.1:{port}"], tmp_path / "bridge.log")
    interrupted = None
    try:
        produce(broker.bootstrap, topics["alerts"], [("x", alert_message("x", "firing", now - 60, now - 50)),
                                                     ("y", alert_message("y", "firing", now - 40, now - 30))])
        ref_bridge.wait_ready()
        wait_until(lambda: entities(reference) == {"x", "y"}, 30, "x and y open in the reference Alertmanager")
        assert bridge.readyz() == 503 and bridge.proc.poll() is None  # unreachable: retried, not ready
        interrupted = Alertmanager(tmp_path, hook.url, port=port, name="interrupted")
        bridge.wait_ready()
        wait_until(lambda: entities(interrupted) == {"x", "y"}, 30, "x and y once Alertmanager is reachable")

        interrupted.stop()
        stopped_at = time.monotonic()
        wait_until(lambda: bridge.readyz() == 503, 10, "/readyz 503 while Alertmanager is down")
        produce(broker.bootstrap, topics["alerts"], [("x", alert_message("x", "resolved", now - 60, now - 10)),
                                                     ("z", alert_message("z", "firing", now - 5, now - 2))])
        wait_until(lambda: entities(reference) == {"y", "z"}, 30, "x resolved and z open in the reference")
        wait_until(lambda: committed(broker.bootstrap, f"{topics['group']}-ref") == 4, 30, "the reference's commit")
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))  # the outage lasts OUTAGE_S, by design
        assert bridge.readyz() == 503 and bridge.proc.poll() is None
        assert committed(broker.bootstrap, f"{topics['group']}-bridge") == 2  # nothing accepted, nothing committed
        interrupted.start()  # empty: Alertmanager keeps no alerts across restarts
        wait_until(lambda: interrupted.open_set() == reference.open_set(), 30,
                   "the interrupted Alertmanager to hold the reference's open alerts")
        assert entities(interrupted) == {"y", "z"}
        bridge.wait_ready()
        wait_until(lambda: committed(broker.bootstrap, f"{topics['group']}-bridge") == 4, 30, "the bridge's commit")

        # the bridge restarts too: everything is committed, so it must re-learn y and z from the topic
        assert bridge.terminate() == 0
        interrupted.stop()
        interrupted.start()
        assert interrupted.alerts() == []
        bridge = BridgeProcess(broker.bootstrap, topics, [interrupted.url], tmp_path / "bridge2.log")
        wait_until(lambda: interrupted.open_set() == reference.open_set(), 30,
                   "a restarted bridge to re-post the open alerts it re-learned")
    finally:
        for process in (bridge, ref_bridge):
            process.close()
        for am in (interrupted, reference):
            if am is not None:
                am.stop()
        hook.close()


@pytest.fixture
def alertmanager(tmp_path):
    """(Alertmanager, its webhook receiver), stopped after the test."""
    hook = Webhook()
    am = Alertmanager(tmp_path, hook.url)
    yield am, hook
    am.stop()
    hook.close()


@pytest.fixture
def client_topics(broker, client_names):
    """`topics` for each Kafka client the bridge can consume with (kafka.client)."""
    return make_topics(broker.bootstrap, client_names)


@pytest.fixture
def bridge(broker, client_topics, alertmanager, tmp_path):
    process = BridgeProcess(broker.bootstrap, client_topics, [alertmanager[0].url], tmp_path / "bridge.log")
    yield process
    process.close()


def test_a_silence_suppresses_the_notification_of_a_matching_alert(broker, topics, alertmanager, tmp_path):
    now = time.time()
    am, hook = alertmanager
    am.silence({"entity": "silenced-host"})
    bridge = BridgeProcess(broker.bootstrap, topics, [am.url], tmp_path / "bridge.log")
    try:
        produce(broker.bootstrap, topics["alerts"],
                [("silenced-host", alert_message("silenced-host", "firing", now - 30, now - 20)),
                 ("paged-host", alert_message("paged-host", "firing", now - 30, now - 20))])
        wait_until(lambda: entities(am) == {"silenced-host", "paged-host"}, 30, "both alerts in Alertmanager")
        wait_until(lambda: hook.alerts("firing"), 30, "a notification at the webhook")
        notified = {a["labels"]["entity"] for a in hook.alerts()}
        assert notified == {"paged-host"}
        states = {a["labels"]["entity"]: a["status"] for a in am.alerts()}
        assert states["silenced-host"]["state"] == "suppressed" and states["silenced-host"]["silencedBy"]
        assert states["paged-host"]["state"] == "active"
    finally:
        bridge.close()


def test_malformed_messages_and_refused_alerts_go_to_the_dead_letter_topic(broker, client_topics, alertmanager,
                                                                         bridge):
    now, topics = time.time(), client_topics
    produce(broker.bootstrap, topics["alerts"], [
        ("a", b"not json at all"),
        ("a", b'{"status": "firing", "entity": "a"}'),
        ("b", alert_message("b", "resolved", now - 10, now - 100)),  # ends before it starts: Alertmanager 400
        ("c", alert_message("c", "firing", now - 10, now - 5))])
    dead = read_topic(broker.bootstrap, topics["dlq"], lambda m: len(m) >= 3, 30)
    reasons = {d["reason"]: d for d in dead}
    assert set(reasons) == {"not_json", "bad_field", "refused_by_alertmanager"}
    assert reasons["not_json"]["payload"] == "not json at all"
    assert "alert_id" in reasons["bad_field"]["detail"]
    refused = reasons["refused_by_alertmanager"]
    assert "HTTP 400" in refused["detail"] and "start time must be before end time" in refused["detail"]
    assert '"entity":"b"' in refused["payload"] and refused["source"]["topic"] == topics["alerts"]
    wait_until(lambda: entities(alertmanager[0]) == {"c"}, 30, "the valid alert of the batch in Alertmanager")


def test_a_malformed_alertmanager_url_fails_start_up_with_one_line_and_exit_code_2():
    out = subprocess.run([sys.executable, "-m", "streamdet", "alertmanager", "--config", str(REPO / "config" /
                          "smd.yaml"), "--set", "kafka.bootstrap_servers=127.0.0.1:1",
                          "--set", "alertmanager.urls=[http://am:9093, 'htp//am:9093']"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "streamdet: error: alertmanager.urls[1]: malformed URL 'htp//am:9093' "
        "(expected http://host:port or https://host:port)"]


def test_with_two_alertmanagers_one_down_alerts_count_as_delivered_and_reach_the_other_once_it_is_up(
        broker, topics, alertmanager, tmp_path):
    now = time.time()
    up, hook = alertmanager
    port = free_port()
    bridge = BridgeProcess(broker.bootstrap, topics, [up.url, f"http://127.0.0.1:{port}"], tmp_path / "bridge.log")
    late = None
    try:
        produce(broker.bootstrap, topics["alerts"], [("h", alert_message("h", "firing", now - 30, now - 20))])
        wait_until(lambda: entities(up) == {"h"}, 30, "the alert in the Alertmanager that is up")
        bridge.wait_ready()  # one Alertmanager answering is enough, as for Prometheus
        wait_until(lambda: committed(broker.bootstrap, f"{topics['group']}-bridge") == 1, 30, "the commit")
        late = Alertmanager(tmp_path, hook.url, port=port, name="late")
        wait_until(lambda: late.open_set() == up.open_set(), 30, "the open alert re-posted to the late one")
    finally:
        bridge.close()
        if late is not None:
            late.stop()


def test_a_frozen_broker_turns_readyz_503_while_open_alerts_keep_being_re_posted(names, alertmanager, tmp_path):
    now = time.time()
    am, _hook = alertmanager
    with EmbeddedBroker() as broker:
        topics = make_topics(broker.bootstrap, names)
        bridge = BridgeProcess(broker.bootstrap, topics, [am.url], tmp_path / "bridge.log")
        try:
            produce(broker.bootstrap, topics["alerts"], [("f", alert_message("f", "firing", now - 30, now - 20))])
            wait_until(lambda: entities(am) == {"f"}, 30, "the alert in Alertmanager")
            bridge.wait_ready()
            os.kill(broker.pid, signal.SIGSTOP)  # a network partition: the broker keeps its memory
            try:
                wait_until(lambda: bridge.readyz() == 503, 30, "/readyz 503 while the broker does not answer")
                # endsAt is 4 resends (4 s here) ahead; on a loaded machine the bridge's loop can stall longer (a
                # commit caught by the freeze waits up to its 5 s deadline), so the alert may lapse for a moment
                # before the next re-post brings it back: wait for it, then for a re-post
                updated = wait_until(am.alerts, 10, "the alert in Alertmanager during the outage")[0]["updatedAt"]
                wait_until(lambda: any(a["updatedAt"] != updated for a in am.alerts()), 10,
                           "a re-post during the outage")
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            bridge.wait_ready(60)
            produce(broker.bootstrap, topics["alerts"], [("f", alert_message("f", "resolved", now - 30, now - 1))])
            wait_until(lambda: am.alerts() == [], 30, "the resolve after the outage")
            assert "broker reachable again" in bridge.log_text()
        finally:
            bridge.close()


def test_a_timestamp_in_milliseconds_is_dead_lettered_and_the_bridge_goes_on(broker, topics, alertmanager, tmp_path):
    now = time.time()
    am, _hook = alertmanager
    bridge = BridgeProcess(broker.bootstrap, topics, [am.url], tmp_path / "bridge.log")
    try:
        produce(broker.bootstrap, topics["alerts"], [("ms", alert_message("ms", "firing", now * 1000, now * 1000)),
                                                     ("ok", alert_message("ok", "firing", now - 30, now - 20))])
        dead = read_topic(broker.bootstrap, topics["dlq"], lambda m: m, 30)
        assert [d["reason"] for d in dead] == ["bad_field"] and "Unix time in seconds" in dead[0]["detail"]
        wait_until(lambda: entities(am) == {"ok"}, 30, "the valid alert after the bad one in Alertmanager")
        wait_until(lambda: committed(broker.bootstrap, f"{topics['group']}-bridge") == 2, 30, "the commit")
        assert bridge.proc.poll() is None
    finally:
        bridge.close()


def test_a_resolve_stamped_by_a_clock_running_ahead_ends_the_alert_now(broker, topics, alertmanager, tmp_path):
    ahead = time.time() + 3600  # the host's clock runs an hour ahead of the bridge's
    am, hook = alertmanager
    bridge = BridgeProcess(broker.bootstrap, topics, [am.url], tmp_path / "bridge.log")
    try:
        produce(broker.bootstrap, topics["alerts"], [("fast", alert_message("fast", "firing", ahead - 30, ahead - 20))])
        wait_until(lambda: entities(am) == {"fast"}, 30, "the alert in Alertmanager")
        produce(broker.bootstrap, topics["alerts"], [("fast", alert_message("fast", "resolved", ahead - 30, ahead))])
        wait_until(lambda: am.alerts() == [], 30, "the resolve to end the alert at once, not in an hour")
    finally:
        bridge.close()


def test_a_back_off_longer_than_the_liveness_limit_keeps_healthz_alive(broker, topics, monkeypatch):
    """Waiting out an Alertmanager outage is the bridge working: /healthz must not fail (a liveness probe would
    restart it in a loop) however long max_backoff_s makes the wait. The staleness limit is shortened to 2 s so that
    the back-off passes it within seconds (0.5, 1, 2, 4 s ...)."""
    from streamdet.io import bridge_metrics

    monkeypatch.setattr(bridge_metrics, "HEALTH_STALE_S", 2.0)
    with bridge_in_process(broker, topics, [f"http://127.0.0.1:{free_port()}"], "alertmanager.max_backoff_s=600",
                           "alertmanager.timeout_s=1") as (bridge, port):
        produce(broker.bootstrap, topics["alerts"], [("h", alert_message("h", "firing", time.time() - 30,
                                                                         time.time() - 20))])
        consumed = 'streamdet_alertmanager_messages_total{status="firing"} 1.0'
        wait_until(lambda: consumed in str(http("GET", f"http://127.0.0.1:{port}/metrics")[1]), 30,
                   "the bridge to consume the alert (its post is then retried with back-off)")
        healthy_until(port, 8, "backing off")  # a back-off from 0.5 s waits longer than the 2 s limit within this
        assert bridge.backoff.failing


def test_behind_a_proxy_with_a_body_limit_many_open_alerts_stay_open(broker, topics, alertmanager, tmp_path):
    """Open alerts are re-posted every resend interval, or Alertmanager ends them at their endsAt. An incident that
    opens many alerts at once made one resend POST too large for a proxy's body limit (413): none was re-posted, and
    four resend intervals later every alert ended in Alertmanager while still open on the topic. Posts now carry at
    most POST_CHUNK alerts."""
    from streamdet.alertmanager.bridge import POST_CHUNK

    am, _ = alertmanager
    now = time.time()
    n = POST_CHUNK * 2 + 50
    messages = [(f"host-{i}", alert_message(f"host-{i}", "firing", now - 60, now - 50)) for i in range(n)]
    one_post = len(orjson.dumps([to_alertmanager(parse(messages[0][1]), load_config(None, []).alertmanager, now)]))
    proxy = BodyLimitProxy(am.url, limit=one_post * POST_CHUNK * 3 // 2)  # a chunk passes, all of them do not
    bridge = BridgeProcess(broker.bootstrap, topics, [proxy.url], tmp_path / "bridge.log")
    try:
        produce(broker.bootstrap, topics["alerts"], messages)
        wait_until(lambda: len(am.alerts()) == n, 60, "every alert in Alertmanager")
        watch_until = time.monotonic() + 8  # endsAt is 4 resend intervals (1 s here) ahead of each re-post

        def all_open_for_the_whole_watch():
            assert len(am.alerts()) == n, f"{n - len(am.alerts())} alerts ended while open"
            return time.monotonic() > watch_until

        wait_until(all_open_for_the_whole_watch, 20, "eight seconds of re-posts")
        assert proxy.refused == 0  # no post over the limit, the first ones included
    finally:
        bridge.close()
        proxy.close()


def test_alertmanagers_that_never_answer_keep_healthz_alive(broker, topics, monkeypatch):
    """Three Alertmanagers whose hosts accept connections and never answer (a network partition): each request waits
    timeout_s. Posted one after the other, a post took three timeouts without a beat, longer than /healthz's limit,
    and a liveness probe would restart the bridge in a loop. The members are now posted to at once, and the limit
    allows one request's timeout. The limit is shortened to 2 s and the timeout set to 3 s."""
    import socket

    from streamdet.io import bridge_metrics

    monkeypatch.setattr(bridge_metrics, "HEALTH_STALE_S", 2.0)
    silent = [socket.create_server(("127.0.0.1", 0), backlog=16) for _ in range(3)]  # accept, never answer
    urls = [f"http://127.0.0.1:{s.getsockname()[1]}" for s in silent]
    posts = 'streamdet_alertmanager_posts_total{outcome="unavailable"}'
    try:
        with bridge_in_process(broker, topics, urls, "alertmanager.max_backoff_s=1", "alertmanager.timeout_s=3") \
                as (bridge, port):
            def timed_out_posts() -> float:
                text = str(http("GET", f"http://127.0.0.1:{port}/metrics")[1])
                return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(posts))

            produce(broker.bootstrap, topics["alerts"], [("h", alert_message("h", "firing", time.time() - 30,
                                                                             time.time() - 20))])
            wait_until(lambda: timed_out_posts() >= 3, 30, "a post to the three members to time out")
            healthy_until(port, 7, "posting to members that never answer")  # one post in turn took 9 s
            assert timed_out_posts() >= 6  # it kept trying meanwhile
    finally:
        for s in silent:
            s.close()


def test_a_second_sigterm_ends_a_slow_bridge_shutdown_at_once(broker, topics, tmp_path):
    """The first SIGTERM stops cleanly, which waits for the post in flight (here to an Alertmanager that accepts and
    never answers, for its 60 s timeout); a second one ends the bridge at once, as it does the daemon."""
    import socket

    silent = socket.create_server(("127.0.0.1", 0), backlog=16)  # accepts, never answers
    silent.settimeout(30)
    bridge = BridgeProcess(broker.bootstrap, topics, [f"http://127.0.0.1:{silent.getsockname()[1]}"],
                           tmp_path / "bridge.log", extra=("alertmanager.timeout_s=60",))
    try:
        produce(broker.bootstrap, topics["alerts"], [("h", alert_message("h", "firing", time.time() - 30,
                                                                         time.time() - 20))])
        waiting, _ = silent.accept()  # the bridge's request is in flight
        bridge.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "signal received" in bridge.log_text(), 20, "the first signal handled")
        assert bridge.proc.poll() is None, bridge.log_text()[-3000:]  # the clean stop waits for the answer
        started = time.monotonic()
        bridge.proc.send_signal(signal.SIGTERM)
        code = bridge.proc.wait(90)
        took = time.monotonic() - started
        assert code == -signal.SIGTERM and took < 5, (code, took, bridge.log_text()[-3000:])
        waiting.close()
    finally:
        bridge.close()
        silent.close()


@contextmanager
def bridge_in_process(broker, topics, urls: list[str], *sets: str):
    """The bridge on a thread of this process (so that a test can shorten /healthz's limit), on the session broker;
    yields (bridge, port of its endpoints)."""
    import threading

    from streamdet.alertmanager.main import make_bridge

    port = free_port()
    cfg = load_config(REPO / "config" / "smd.yaml", [
        f"kafka.bootstrap_servers={broker.bootstrap}", f"kafka.alerts_topic={topics['alerts']}", "kafka.partitions=2",
        f"alertmanager.urls=[{','.join(urls)}]", f"alertmanager.group_id={topics['group']}-inproc",
        f"alertmanager.dlq_topic={topics['dlq']}", f"alertmanager.port={port}", *sets])
    bridge = make_bridge(cfg)
    runner = threading.Thread(target=bridge.run, daemon=True)
    runner.start()
    try:
        yield bridge, port
    finally:
        bridge.stop()
        runner.join(30)
    assert not runner.is_alive()


def healthy_until(port: int, seconds: float, what: str) -> None:
    """/healthz answers 200 at every look for `seconds`."""
    watch_until = time.monotonic() + seconds

    def healthy_for_the_whole_watch():
        assert http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200, f"healthz failed while {what}"
        return time.monotonic() > watch_until

    wait_until(healthy_for_the_whole_watch, seconds + 20, f"{seconds:.0f} s of {what}", interval_s=0.1)
