"""Running totals -> per-second rates, per (entity, channel), with bounded state that checkpoints per entity.

Rules (the same for every format; `kind` comes from the decoder):
- the first total of a series gives no sample (there is no rate yet); it only sets the baseline;
- a total at the same timestamp as the previous one is a duplicate delivery and is dropped; an older one is
  rejected as `late`;
- COUNTER going down: a wrap when the previous total was in the top quarter of the 32-bit (or 64-bit) range and the
  new one in the bottom quarter (collectd's counters are unsigned); anything else is a reset;
- DERIVE (and Prometheus *_total) going down is a reset: rejected as `counter_reset`, naming both totals, and the
  new total becomes the baseline, so the next sample has a rate again;
- ABSOLUTE is a count since the previous sample: divided by the elapsed time (or the agent's interval).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

from .common import ABSOLUTE, COUNTER, GAUGE, Sample
from ...errors import DecodeError

WRAPS = (2.0 ** 32, 2.0 ** 64)


class RateTracker:
    def __init__(self, max_entities: int, max_channels: int):
        self.max_entities = max_entities
        self.max_channels = max_channels
        self._last: OrderedDict[str, dict[str, tuple[float, float]]] = OrderedDict()  # entity -> channel -> (ts, total)
        self.duplicates = 0

    def convert(self, sample: Sample) -> Optional[Sample]:
        """The sample as a gauge (a rate for totals), None when there is no rate yet; DecodeError when unusable."""
        if sample.kind == GAUGE:
            return sample
        series = self._series(sample.entity, sample.channel)
        previous = series.get(sample.channel)
        series[sample.channel] = (sample.ts, sample.value)
        if previous is None:
            return None if sample.kind != ABSOLUTE or sample.interval <= 0 else \
                sample._replace(value=sample.value / sample.interval, kind=GAUGE)
        last_ts, last_total = previous
        if sample.ts <= last_ts:
            series[sample.channel] = previous
            if sample.ts == last_ts:
                self.duplicates += 1
                return None
            raise DecodeError("late", f"{sample.channel}: total at ts {sample.ts!r} is older than the previous one "
                                      f"({last_ts!r})")
        elapsed = sample.ts - last_ts
        if sample.kind == ABSOLUTE:
            return sample._replace(value=sample.value / elapsed, kind=GAUGE)
        delta = sample.value - last_total
        if delta < 0:
            delta = _wrapped(last_total, sample.value) if sample.kind == COUNTER else None
            if delta is None:
                raise DecodeError("counter_reset", f"{sample.channel}: total went from {last_total!r} to "
                                                   f"{sample.value!r} (the source restarted; the next sample has a "
                                                   f"rate again)")
        return sample._replace(value=delta / elapsed, kind=GAUGE)

    def _series(self, entity: str, channel: str) -> dict:
        series = self._last.get(entity)
        if series is None:
            if len(self._last) >= self.max_entities:
                self._last.popitem(last=False)  # the least recently updated entity loses its baselines
            series = self._last[entity] = {}
        else:
            self._last.move_to_end(entity)
        if channel not in series and len(series) >= self.max_channels:
            raise DecodeError("entity_cap", f"{entity}: more than input.max_channels={self.max_channels} counters")
        return series

    def state_dict(self, entity: str) -> list:
        return [[channel, ts, total] for channel, (ts, total) in self._last.get(entity, {}).items()]

    def load_state(self, entity: str, state: list) -> None:
        series = self._series(entity, "")
        series.update({channel: (float(ts), float(total)) for channel, ts, total in state})

    def remove(self, entity: str) -> None:
        self._last.pop(entity, None)


def _wrapped(previous: float, current: float) -> Optional[float]:
    """The increase across an unsigned wrap, or None when the drop does not look like one."""
    for size in WRAPS:
        if previous < size:
            if previous >= 0.75 * size and 0 <= current < 0.25 * size:
                return size - previous + current
            return None
    return None
