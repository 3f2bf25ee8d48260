"""No log line carries the SASL password, even at logging.level=DEBUG (the level one turns on to debug exactly the
connection settings where the password is)."""

from __future__ import annotations

import io
import logging

import pytest

from streamdet.config import load_config
from streamdet.io.admin import ensure_topics
from streamdet.io.logs import setup_logging

PASSWORD = "pw-that-must-not-be-logged-7f3a"


def test_creating_topics_at_debug_level_never_logs_the_sasl_password(broker, monkeypatch):
    monkeypatch.setenv("STREAMDET_TEST_PW", PASSWORD)
    monkeypatch.setattr("streamdet.io.connection.BOOTSTRAP_TIMEOUT_MS", 2000)  # the failing attempt: 2 s
    cfg = load_config(None, ["logging.level=DEBUG", "kafka.security.protocol=SASL_PLAINTEXT",
                             "kafka.security.sasl_mechanism=PLAIN", "kafka.security.sasl_username=svc",
                             "kafka.security.sasl_password_env=STREAMDET_TEST_PW"])
    stream = io.StringIO()
    setup_logging(cfg.logging, stream)
    try:
        with pytest.raises(Exception):  # the embedded broker speaks no SASL: the start-up's attempt fails
            ensure_topics(cfg.kafka.at(broker.bootstrap), ["metrics"])
    finally:
        logging.getLogger().handlers.clear()
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("kafka").setLevel(logging.NOTSET)
    text = stream.getvalue()
    assert "svc" in text, "the client's configuration was not logged at all: the test shows nothing"
    assert PASSWORD not in text, [line for line in text.splitlines() if PASSWORD in line]
