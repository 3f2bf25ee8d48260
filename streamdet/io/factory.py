"""The StreamClient that `kafka.client` names."""

from __future__ import annotations

from ..config import KafkaConfig
from ..errors import ConfigError
from .client import StreamClient


def make_client(kafka: KafkaConfig) -> StreamClient:
    """confluent-kafka (the default) is imported only when asked for, so that `kafka.client: kafka-python` runs where
    librdkafka's wheel cannot be installed."""
    if kafka.client == "confluent":
        try:
            from .confluent import ConfluentClient
        except ImportError as exc:
            raise ConfigError("kafka.client: 'confluent' (the default) needs the confluent-kafka package: "
                              "pip install confluent-kafka, or set kafka.client: kafka-python") from exc
        return ConfluentClient(kafka)
    from .kafka_python import KafkaPythonClient

    return KafkaPythonClient(kafka)
