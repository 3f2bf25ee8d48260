"""Topics streamdet creates get kafka.replication_factor replicas, by default the cluster's own default (one replica
would lose the alerts and checkpoints with one broker's disk)."""

from __future__ import annotations

import logging

import pytest

from streamdet.config import load_config
from streamdet.errors import ConfigError
from streamdet.io.admin import ensure_topics

pytestmark = pytest.mark.kafka


def created_replicas(caplog) -> list[str]:
    return [r.getMessage().rsplit("replicas=", 1)[1] for r in caplog.records if "created topics" in r.getMessage()]


@pytest.mark.parametrize("setting, reported", [(None, "1"), (3, "3")])
def test_created_topics_ask_for_the_configured_replicas(broker, names, caplog, setting, reported):
    """The embedded broker's default is one replica and it takes any factor asked for: what it reports back is what
    streamdet asked (-1, the default: the broker's own; 3: three)."""
    sets = [] if setting is None else [f"kafka.replication_factor={setting}"]
    kafka = load_config(None, sets).kafka.at(broker.bootstrap)
    with caplog.at_level(logging.INFO, logger="streamdet.io.admin"):
        assert ensure_topics(kafka, [names["alerts"], names["dlq"]]) == sorted([names["alerts"], names["dlq"]])
    assert created_replicas(caplog) == [reported]


def test_zero_replicas_is_refused_by_name_before_any_topic_is_made(broker, names):
    kafka = load_config(None, ["kafka.replication_factor=0"]).kafka.at(broker.bootstrap)
    with pytest.raises(ConfigError, match="kafka.replication_factor"):
        ensure_topics(kafka, [names["alerts"]])
    default = load_config(None).kafka.at(broker.bootstrap)
    assert ensure_topics(default, [names["alerts"]]) == [names["alerts"]]  # the refused call created nothing


def test_a_negative_factor_other_than_minus_one_is_a_config_error():
    with pytest.raises(ConfigError, match="replication_factor"):
        load_config(None, ["kafka.replication_factor=-2"])
