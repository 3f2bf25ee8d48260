"""Per-sample input formats: each decoder turns one message into Samples (entity, channel, ts, value).

`make_format_decoder(input_cfg)` returns a FormatDecoder for `input.format` (collectd, telegraf, influx, prometheus);
its `decode(raw)` parses the message and turns running totals into per-second rates (rates.py). Pure and Kafka-free,
like every pipeline stage: the assembler (pipeline/assemble.py) turns the samples into rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ...errors import DecodeError
from .collectd import CollectdDecoder
from .common import FORMAT_REASONS, GAUGE, Sample
from .influx import InfluxDecoder
from .prometheus import PrometheusDecoder
from .rates import RateTracker
from .telegraf import TelegrafDecoder

__all__ = ["FORMATS", "FORMAT_REASONS", "FormatDecoder", "FormatOptions", "Sample", "make_format_decoder"]

FORMATS = {cls.name: cls for cls in (CollectdDecoder, TelegrafDecoder, InfluxDecoder, PrometheusDecoder)}


@dataclass(frozen=True)
class FormatOptions:
    """The input section's keys a decoder reads (see config.InputConfig)."""

    max_record_bytes: int = 65536
    entity_key: Optional[str] = None  # None = the format's default (host; instance for prometheus)
    channel_tags: Optional[tuple[str, ...]] = None  # None = every tag/label but the entity's
    counters: tuple[str, ...] = ()  # glob patterns of channels that are running totals (telegraf/influx/prometheus)
    agent_rates: bool = True  # collectd: write_kafka StoreRates true (its default) sends rates, not totals
    max_entities: int = 100_000
    max_channels: int = 4096

    @classmethod
    def from_input(cls, input_cfg) -> "FormatOptions":
        return cls(**{name: getattr(input_cfg, name) for name in cls.__dataclass_fields__})


class FormatDecoder:
    """One format's parser and the rate state of its running totals."""

    def __init__(self, name: str, options: FormatOptions):
        if name not in FORMATS:
            raise ValueError(f"unknown input format {name!r} (known: {', '.join(FORMATS)})")
        self.name = name
        self.parser = FORMATS[name](options)
        self.rates = RateTracker(options.max_entities, options.max_channels)

    def decode(self, raw: bytes) -> list[Sample]:
        """The message's samples as gauges and rates; DecodeError(reason, detail) when the message is unusable."""
        samples = self.parser.decode(raw)
        if all(sample.kind == GAUGE for sample in samples):  # the common case: nothing to convert
            return samples
        out = []
        for sample in samples:
            converted = self.rates.convert(sample)
            if converted is not None:
                out.append(converted)
        return out

    def decode_many(self, raws) -> tuple[list[tuple[int, Sample]], list[tuple[int, DecodeError]]]:
        """(samples with the input index of their message, rejected messages with their index)."""
        samples, rejected = [], []
        for i, raw in enumerate(raws):
            try:
                samples.extend((i, sample) for sample in self.decode(raw))
            except DecodeError as exc:
                rejected.append((i, exc))
        return samples, rejected


def make_format_decoder(input_cfg) -> FormatDecoder:
    return FormatDecoder(input_cfg.format, FormatOptions.from_input(input_cfg))
