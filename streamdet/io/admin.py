"""Topic administration: create the topics streamdet uses when they are missing."""

from __future__ import annotations

import logging
from typing import Iterable, Optional

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from ..config import KafkaConfig
from ..errors import ConfigError
from .connection import client_options

log = logging.getLogger(__name__)

SECRET_OPTIONS = ("sasl_plain_password", "ssl_password")


class _RedactSecrets(logging.Filter):
    """kafka-python's admin client logs its whole configuration at DEBUG, the SASL password included: logs are
    shipped and read by many, so the password is masked before any handler sees the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict):
            record.args = _redacted(record.args)
        elif isinstance(record.args, tuple):
            record.args = tuple(_redacted(a) if isinstance(a, dict) else a for a in record.args)
        return True


def _redacted(options: dict) -> dict:
    return {k: "[redacted]" if k in SECRET_OPTIONS and v else v for k, v in options.items()}


logging.getLogger("kafka.admin.client").addFilter(_RedactSecrets())


def ensure_topics(kafka: KafkaConfig, topics: Iterable[str], compacted: bool = False) -> list[str]:
    """Create the missing topics with `kafka.partitions` partitions; return the names created.

    compacted=True (the state changelog) asks for cleanup.policy=compact, and falls back to a plain topic if the
    broker refuses the setting."""
    if kafka.replication_factor == 0:
        raise ConfigError("kafka.replication_factor: 0 replicas; give 1 or more, or -1 for the cluster's "
                          "default.replication.factor")
    admin = KafkaAdminClient(**client_options(kafka))
    try:
        existing = set(admin.list_topics())
        missing = sorted(set(topics) - existing)
        if kafka.metrics_topic in existing and kafka.metrics_topic in set(topics):
            _check_partitions(admin, kafka)
        replicas = {name: n for name in missing
                    if (n := _create(admin, name, kafka.partitions, kafka.replication_factor, compacted)) is not None}
        if replicas:
            log.info("created topics %s partitions=%d replicas=%s", ",".join(replicas), kafka.partitions,
                     ",".join(sorted({str(n) for n in replicas.values()})))
        return list(replicas)
    finally:
        admin.close()


def _check_partitions(admin: KafkaAdminClient, kafka: KafkaConfig) -> None:
    """A metrics topic created before streamdet (auto-created by a first producer with the broker's default, often
    1) keeps its partition count: kafka.partitions is not applied, and instances beyond that count stay idle and not
    ready. Said at start-up, where it is otherwise silent."""
    for topic in admin.describe_topics([kafka.metrics_topic]):
        n = len(topic.get("partitions") or ())
        if 0 < n < kafka.partitions:
            log.warning("topic %s exists with %d partition(s), fewer than kafka.partitions=%d (streamdet only sizes "
                        "topics it creates): at most %d instance(s) will consume it", kafka.metrics_topic, n,
                        kafka.partitions, n)


def _create(admin: KafkaAdminClient, name: str, partitions: int, replicas: int, compacted: bool) -> Optional[int]:
    """Create one topic; return its replication factor as the broker reports it, None when another instance
    created it first."""
    configs = {"cleanup.policy": "compact"} if compacted else {}
    try:
        answer = admin.create_topics([NewTopic(name, partitions, replicas, topic_configs=configs)])
    except TopicAlreadyExistsError:
        return None
    except KafkaError as exc:
        if not compacted:
            raise
        log.warning("broker refused a compacted %s (%s); creating it plain", name, exc)
        return _create(admin, name, partitions, replicas, compacted=False)
    reported = [t.get("replication_factor") for t in (answer or {}).get("topics", ()) if t.get("name") == name]
    return reported[0] if reported and reported[0] is not None else replicas
