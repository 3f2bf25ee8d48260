"""Topic administration: create the topics streamdet uses when they are missing."""

from __future__ import annotations

import logging
from typing import Iterable

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from ..config import KafkaConfig
from .connection import client_options

log = logging.getLogger(__name__)


def ensure_topics(kafka: KafkaConfig, topics: Iterable[str], compacted: bool = False) -> list[str]:
    """Create the missing topics with `kafka.partitions` partitions; return the names created.

    compacted=True (the state changelog) asks for cleanup.policy=compact, and falls back to a plain topic if the
    broker refuses the setting."""
    admin = KafkaAdminClient(**client_options(kafka))
    try:
        missing = sorted(set(topics) - set(admin.list_topics()))
        created = [name for name in missing if _create(admin, name, kafka.partitions, compacted)]
        if created:
            log.info("created topics %s partitions=%d", ",".join(created), kafka.partitions)
        return created
    finally:
        admin.close()


def _create(admin: KafkaAdminClient, name: str, partitions: int, compacted: bool) -> bool:
    """False when another instance created it first."""
    configs = {"cleanup.policy": "compact"} if compacted else {}
    try:
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    except TopicAlreadyExistsError:
        return False
    except KafkaError as exc:
        if not compacted:
            raise
        log.warning("broker refused a compacted %s (%s); creating it plain", name, exc)
        return _create(admin, name, partitions, compacted=False)
    return True
