"""The contract delivery's ordered commit is built on (io/client.py): `flush` raises while any produced record is
unacknowledged, and keeps it for the next flush. With kafka-python, a flush that times out lost track of its
records: the next flush returned success with them still unacknowledged, and the commit after it went ahead (the
records expire in kafka-python after its delivery timeout, 120 s: an alert lost behind a committed offset)."""

from __future__ import annotations

import os
import signal

import pytest

from streamdet.config import load_config
from streamdet.io.admin import ensure_topics
from streamdet.io.broker import EmbeddedBroker
from streamdet.io.factory import make_client
from tests.conftest import stop_process

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("client_name", ["kafka-python", "confluent"])
def test_a_flush_that_times_out_keeps_its_records_for_the_next_flush(names, client_name):
    with EmbeddedBroker() as broker:
        kafka = load_config(None, [f"kafka.group_id={names['group']}", f"kafka.client={client_name}"]).kafka
        kafka = kafka.at(broker.bootstrap)
        ensure_topics(kafka, [names["alerts"]])
        client = make_client(kafka)
        try:
            client.produce(names["alerts"], b"e", b"before")
            assert client.flush(10) == 1
            stop_process(broker.pid)
            try:
                client.produce(names["alerts"], b"e", b"during")
                with pytest.raises(Exception):
                    client.flush(2)
                assert client.unacknowledged() == 1
                with pytest.raises(Exception):
                    client.flush(1)  # still not acknowledged: a commit must not follow
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            assert client.flush(30) >= 1 and client.unacknowledged() == 0
        finally:
            client.close()
