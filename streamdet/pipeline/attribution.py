"""Which channels an alert names: each channel's contribution measured against its own validation distribution.

A model's raw per-channel contributions (reconstruction or forecast error, a memory-attention shift, ...) are not
comparable across channels: a channel that the model never reconstructs well (a noisy counter) has a large error at
every row, so ranking raw contributions names it first in nearly every alert, whatever went wrong. The bundle's
calibration can carry `attribution` = {"method", "center" [C], "spread" [C]}, fitted on the clean validation tails
(train/attribution.py); an alert then ranks channels by (contribution - center) / spread, i.e. by how unusual each
channel's contribution is for that channel. A bundle without it ranks the raw contributions (as before).
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)


def attributed(contrib: np.ndarray, attribution: Optional[dict]) -> np.ndarray:
    """contrib [..., C] standardised by the bundle's attribution record (unchanged when there is none)."""
    if not attribution or attribution.get("method", "raw") == "raw":
        return contrib
    center = np.asarray(attribution["center"], dtype=np.float64)
    spread = np.asarray(attribution["spread"], dtype=np.float64)
    if center.shape != spread.shape or center.shape[-1:] != contrib.shape[-1:] or not (spread > 0).all():
        log.warning("bundle attribution record does not fit the contributions (center %s, spread %s, "
                    "contributions %s, spreads must be > 0): alert ranks the raw contributions",
                    center.shape, spread.shape, contrib.shape)
        return contrib
    return (np.asarray(contrib, dtype=np.float64) - center) / spread
