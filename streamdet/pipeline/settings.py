"""What the pipeline is configured with: its own config sections, not the whole config (no Kafka, no paths, no
training). The composition roots (serve/, evaluate, replay, tools) project a Config onto it with `of`."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import AlertingConfig, InputConfig, ScoringConfig, ThresholdConfig


@dataclass(frozen=True)
class PipelineSettings:
    input: InputConfig
    scoring: ScoringConfig
    threshold: ThresholdConfig
    alerting: AlertingConfig
    max_poll_records: int  # kafka.max_poll_records: the poll size at which the adaptive stride sees a full poll

    @classmethod
    def of(cls, cfg) -> "PipelineSettings":
        """The pipeline's sections of a streamdet.config.Config."""
        return cls(cfg.input, cfg.scoring, cfg.threshold, cfg.alerting, cfg.kafka.max_poll_records)
