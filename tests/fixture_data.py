"""The labelled data the broker tests train on and replay: one entity of the built-in synthetic generator.

A fresh clone has no ../shared/data, so the daemon, delivery, fault and dashboard tests use this entity instead of an
SMD machine: it is generated in milliseconds from a fixed seed (streamdet/data/synthetic.py, through the same
`data.dataset: synthetic` loader a user gets), and its labels are the generator's own. Seed, width and length were
chosen so that the session's tiny LSTM-AE (conftest.tiny_bundle) alerts on the injected anomaly the scenarios centre
on, with a wide margin, and on no other row of the replayed slices; tests/test_fixture_data.py checks both, so that a
change to the generator or the model that breaks this premise fails there by name instead of weakening the broker
tests silently. (The tiny model, trained for seconds, is sure of spikes; the generator's subtler kinds sit near its
threshold, so no scenario depends on them.)
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

CONFIG = Path(__file__).resolve().parent.parent / "config" / "smd.yaml"  # the base config every test daemon runs
ENTITY = "synthetic-0"
CHANNELS = 8
ANOMALY_SEGMENT = 5  # the scenarios centre on the test split's sixth labelled segment: a spike, rows 1664-1666
OVERRIDES = ("data.dataset=synthetic", "data.synthetic_seed=0", "data.synthetic_entities=1",
             f"data.synthetic_channels={CHANNELS}", "data.synthetic_length=7000", f"data.entities=[{ENTITY}]")


@functools.lru_cache(maxsize=1)
def series():
    """The entity's Series (4,000 train and 3,000 test rows, ten labelled test segments of five kinds)."""
    from streamdet.config import load_config
    from streamdet.data import load_series

    (entity,) = load_series(load_config(CONFIG, list(OVERRIDES)))
    return entity


def split_rows(lo: int, hi: int) -> np.ndarray:
    """Test-split rows [lo, hi) as float32 [N, CHANNELS]."""
    return series().test[lo:hi]


def split_labels(lo: int, hi: int) -> np.ndarray:
    return series().test_labels[lo:hi]


def anomaly() -> tuple[int, int]:
    """(start, end_exclusive) test rows of the segment the scenarios replay."""
    start, end, _kind = series().segment_kinds[ANOMALY_SEGMENT]
    return start, end


def replay_slice(length: int, lead: int) -> tuple[int, int]:
    """Test rows [first, last) of `length` rows holding `anomaly()` from `lead` rows in, and no other segment (so an
    alert in the slice can only be about that anomaly, or a false one)."""
    from streamdet.data import label_segments

    start, end = anomaly()
    first, last = start - lead, start - lead + length
    inside = [(a + first, b + first) for a, b in label_segments(split_labels(first, last))]
    if first < 0 or last > len(series().test) or inside != [(start, end)]:
        raise ValueError(f"rows {first}-{last} of {ENTITY}'s test split hold segments {inside}, not just {start}-{end}")
    return first, last
