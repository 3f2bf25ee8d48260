"""HTM's anomaly likelihood over our calibrated values: a NAB's-protocol input that adapts to a file's recent past.

The calibrated likelihood (nab_calibrated) is fixed at training time, so after a lasting change of level every row
keeps a high value and NAB's sweep counts each one outside a window as a false positive. The scoreboard's HTM
detector hands NAB its anomaly likelihood instead (Ahmad et al., Neurocomputing 2017): the short moving average of
the anomaly score, as a Gaussian tail probability under the distribution of that average over the file's recent
history, re-estimated as the file goes on, with repeated red-zone values damped so that an episode reads as one peak.
This module applies that procedure, with HTM's published constants (none tuned here), to each file's calibrated
values, seeded with the bundle's validation scores as its first history. Two deviations, both about our input: the
tail is one-sided (HTM's is two-sided, so a score far BELOW its average also reads as unlikely; an unusually quiet
model is not an anomaly), and HTM's guard for a flat metric (a test on the raw metric values, which this input does
not carry) is left out.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from .nab_calibrated import calibrated_likelihood, log_scaled

AVERAGING_WINDOW = 10  # rows in the short moving average of the anomaly value
HISTORY = 8640  # moving averages the Gaussian is estimated over (a month of 5-minute rows)
ESTIMATION_SAMPLES = 100  # moving averages needed before the first estimate; the likelihood is 0.5 until then
REESTIMATE_EVERY = 100  # rows between estimates
MEAN_FLOOR, VARIANCE_FLOOR = 0.03, 0.0003  # HTM's lower bounds: a near-silent history must not make every blip red
RED, YELLOW = 1e-5, 1e-3  # a red tail probability right after another red one is raised to yellow


def _tail(average: float, mean: float, std: float) -> float:
    """P(a Gaussian average >= `average`); 1 at or below the mean (one-sided: see the module docstring)."""
    if average <= mean:
        return 1.0
    return 0.5 * math.erfc((average - mean) / (std * math.sqrt(2.0)))


def htm_tail_probabilities(values: np.ndarray, history: np.ndarray) -> np.ndarray:
    """Filtered tail probability of each row's moving average; NaN where the value is not finite (unscored rows
    are neither averaged nor estimated on)."""
    recent = deque(maxlen=AVERAGING_WINDOW)
    averages = deque(maxlen=HISTORY)
    for v in np.asarray(history, np.float64):
        if np.isfinite(v):
            recent.append(v)
            averages.append(sum(recent) / len(recent))
    out = np.full(len(values), np.nan)
    mean = std = None
    since_estimate, previous_raw = REESTIMATE_EVERY, 1.0
    for i, v in enumerate(np.asarray(values, np.float64)):
        if not np.isfinite(v):
            continue
        recent.append(v)
        average = sum(recent) / len(recent)
        if len(averages) >= ESTIMATION_SAMPLES and (mean is None or since_estimate >= REESTIMATE_EVERY):
            sample = np.fromiter(averages, np.float64)
            mean = max(float(sample.mean()), MEAN_FLOOR)
            std = math.sqrt(max(float(sample.var()), VARIANCE_FLOOR))
            since_estimate = 0
        raw = 0.5 if mean is None else _tail(average, mean, std)
        out[i] = YELLOW if raw <= RED and previous_raw <= RED else raw
        previous_raw = raw
        averages.append(average)
        since_estimate += 1
    return out


def adaptive_likelihood(values: np.ndarray, calibration: dict) -> np.ndarray:
    """Each row's filtered HTM tail probability of the calibrated `values` (nab_calibrated), on HTM's log scale in
    [0, 1]; -inf where unscored. The first history is the calibration's own validation scores, as values."""
    history = calibrated_likelihood(np.asarray(calibration.get("sample", []), np.float64), calibration)
    return log_scaled(htm_tail_probabilities(values, history))
