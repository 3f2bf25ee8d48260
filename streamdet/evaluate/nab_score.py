"""NAB score (Lavin & Ahmad, ICMLA 2015), following the published scoring rules of numenta/NAB.

Each labelled window rewards its earliest detection with a scaled sigmoid of the detection's position (start of the
window = full tpWeight, right edge = 0); a window without detection costs fnWeight; a detection outside every window
costs fpWeight x a sigmoid of its distance past the previous window (the full fpWeight before the first window). The
first min(floor(15 % of rows), 750) rows are probationary: not scored, and a window lying wholly inside them costs
nothing. Raw file scores are summed over the corpus and normalised per profile so that the null detector (no
detections) scores 0 and tpWeight x every labelled window (NAB's "perfect") scores 100.

Two protocols, reported side by side and labelled: `corpus_score` scores the detections our operating threshold and
alert rules produce, with no tuning (what the daemon would do); `optimised_corpus_score` is NAB's own protocol, where
every row whose score reaches a threshold is a detection and the threshold is swept per profile over every distinct
score of the scored corpus (tuning on test labels, as the scoreboard's 74.9 and HTM's 70.5 are). Checked against
NAB's reference rules by hand-computed cases (tests/evaluate/test_nab_score.py).
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from pathlib import Path

import numpy as np

from ..data.layout import nab_probation
from ..errors import DataError

PROFILES = {  # numenta/NAB config/profiles.json
    "standard": {"tp": 1.0, "fp": 0.11, "fn": 1.0},
    "reward_low_FP_rate": {"tp": 1.0, "fp": 0.22, "fn": 1.0},
    "reward_low_FN_rate": {"tp": 1.0, "fp": 0.11, "fn": 2.0},
}


def scaled_sigmoid(position: float) -> float:
    """NAB's reward curve: ~+0.987 at relative position -1 (window start), 0 at the right edge, -1 far after it."""
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


probation_length = nab_probation  # the rows of a stream NAB's scorer ignores (data/layout.py)


def _timestamps(root: Path, entity: str) -> np.ndarray:
    path = root / f"{entity}.test.csv.gz"
    try:
        with gzip.open(path, "rt", newline="") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise DataError(f"{path}: NAB test file not found") from None
    if not rows or rows[0][0] != "timestamp":
        raise DataError(f"{path}: first column must be 'timestamp'")
    return np.array([r[0].replace(" ", "T") for r in rows[1:]], dtype="datetime64[us]")


def load_windows(root: str | Path, entities: list[str]) -> dict[str, list[tuple[int, int]]]:
    """NAB windows of each entity as inclusive (first row, last row), from labels/combined_windows.json."""
    root = Path(root)
    path = root / "labels" / "combined_windows.json"
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: NAB windows file not found") from None
    out = {}
    for entity in entities:
        key = f"{entity}.csv"
        if key not in table:
            raise DataError(f"{path}: no windows for {key}")
        stamps = _timestamps(root, entity)
        out[entity] = [(_row(stamps, a, path, key), _row(stamps, b, path, key)) for a, b in table[key]]
    return out


def _row(stamps: np.ndarray, text: str, path: Path, key: str) -> int:
    t = np.datetime64(text.replace(" ", "T"), "us")
    i = int(np.searchsorted(stamps, t))
    if i >= stamps.size or stamps[i] != t:
        raise DataError(f"{path}: {key}: window edge {text} is not a timestamp of the file")
    return i


def _row_rewards(n: int, windows: list[tuple[int, int]], profile: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the weighted score a detection there would earn, and the window index it falls in (-1: none)."""
    reward, window_of = np.empty(n), np.full(n, -1)
    previous_end, previous_width = None, None
    ordered = sorted(windows)
    for k, (a, b) in enumerate(ordered):
        window_of[a:b + 1] = k
    max_tp = scaled_sigmoid(-1.0)
    for i in range(n):
        k = window_of[i]
        if k >= 0:
            a, b = ordered[k]
            width = b - a + 1
            reward[i] = scaled_sigmoid(-(b - i + 1) / width) * profile["tp"] / max_tp
            previous_end, previous_width = b, width
        else:
            unweighted = -1.0 if previous_end is None else scaled_sigmoid(
                abs(previous_end - i) / max(previous_width - 1, 1))
            reward[i] = unweighted * profile["fp"]
    return reward, window_of


def file_score(detections: np.ndarray, windows: list[tuple[int, int]], profile: str) -> tuple[float, int]:
    """Raw NAB score of one file and the number of windows it scores (those reaching past probation)."""
    weights = PROFILES[profile]
    det = np.asarray(detections).astype(bool).ravel()
    reward, window_of = _row_rewards(det.size, windows, weights)
    scored = np.arange(det.size) >= probation_length(det.size)
    counted = np.unique(window_of[scored & (window_of >= 0)])
    total = 0.0
    for k in counted:
        hits = det & scored & (window_of == k)
        total += reward[hits].max() if hits.any() else -weights["fn"]
    false_hits = det & scored & (window_of < 0)
    total += float(reward[false_hits].sum())
    return total, int(counted.size)


def _normalised(raw: float, null: float, perfect: float) -> float:
    """NAB's normalisation: the null detector's raw score maps to 0, a perfect detector's to 100. As in NAB, perfect
    is tpWeight x every labelled window, null is the null detector's score (windows reaching past probation)."""
    return 100.0 * (raw - null) / (perfect - null) if perfect != null else float("nan")


def corpus_score(per_file: dict[str, np.ndarray], windows: dict[str, list[tuple[int, int]]]) -> dict:
    """Normalised NAB score (0 = null detector, 100 = perfect) for every profile over the given files."""
    out = {}
    for profile, w in PROFILES.items():
        raw, n_counted, n_windows = 0.0, 0, 0
        for entity, det in per_file.items():
            score, count = file_score(det, windows[entity], profile)
            raw, n_counted, n_windows = raw + score, n_counted + count, n_windows + len(windows[entity])
        out[f"nab_{profile}"] = _normalised(raw, -w["fn"] * n_counted, w["tp"] * n_windows)
    return out


def relative_scores(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Each row's score relative to the operating threshold in force at that row, (s - t) / |t|: one scale for every
    file, from training-side thresholds only (NAB detectors hand the optimiser scores on one [0, 1] scale). Unscored
    rows get -inf (never a detection)."""
    s, t = np.asarray(scores, np.float64), np.asarray(thresholds, np.float64)
    out = (s - t) / np.maximum(np.abs(t), 1e-12)
    out[~np.isfinite(out)] = -np.inf
    return out


def _scorable_rows(scores: np.ndarray, windows: list[tuple[int, int]], profile: dict, first_window: int):
    """(score, reward, corpus window id or -1) of every row past probation whose score is finite, as NAB's sweeper
    lists them (probationary rows are dropped, so they never detect and never become a candidate threshold)."""
    n = scores.size
    reward, window_of = _row_rewards(n, windows, profile)
    keep = (np.arange(n) >= probation_length(n)) & np.isfinite(scores)
    ids = np.where(window_of >= 0, window_of + first_window, -1)
    return scores[keep], reward[keep], ids[keep]


def _sweep(scores: np.ndarray, reward: np.ndarray, ids: np.ndarray, fn_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact threshold sweep (NAB's sweeper): candidate thresholds are the distinct scores, highest first; at each,
    every row scoring >= it is a detection. Returns (thresholds, raw score minus the null score) per candidate."""
    order = np.argsort(-scores, kind="stable")
    s, r, w = scores[order], reward[order], ids[order]
    delta = np.where(w < 0, r, 0.0)  # a false positive adds its (negative) weighted reward once it is detected
    for k in np.unique(w[w >= 0]):
        rows = np.flatnonzero(w == k)  # in the order the sweep reaches them
        best = np.maximum.accumulate(r[rows])  # a window is worth its best (earliest) detection so far
        delta[rows] = np.diff(best, prepend=-fn_weight)
    gain = np.cumsum(delta)
    last_of_tie = np.append(s[1:] != s[:-1], True)  # a threshold includes every row with an equal score
    return s[last_of_tie], gain[last_of_tie]


def optimised_corpus_score(per_file_scores: dict[str, np.ndarray], windows: dict[str, list[tuple[int, int]]],
                           suffix: str = "optimised") -> dict:
    """NAB's own protocol: per profile, the ONE threshold over the whole corpus that maximises the normalised score
    (what the scoreboard's figures use; it tunes on the scored labels, so it is optimistic by construction). Every
    distinct score past probation is a candidate, as in NAB's sweeper, and no detection at all (the null detector)
    is one too, so the result is never below 0. Keys: nab_<profile>_<suffix> and nab_<profile>_<suffix>_threshold."""
    out = {}
    for name, w in PROFILES.items():
        parts, first, null, n_windows = [], 0, 0.0, 0
        for entity, scores in per_file_scores.items():
            parts.append(_scorable_rows(np.asarray(scores, np.float64), windows[entity], w, first))
            first += len(windows[entity])
            null += file_score(np.zeros(len(scores)), windows[entity], name)[0]
            n_windows += len(windows[entity])
        thresholds, gain = _sweep(*(np.concatenate(c) for c in zip(*parts)), w["fn"])
        best = int(np.argmax(gain)) if gain.size else -1
        raw, threshold = (null, math.inf) if best < 0 or gain[best] <= 0 else (null + gain[best], thresholds[best])
        out[f"nab_{name}_{suffix}"] = _normalised(raw, null, w["tp"] * n_windows)
        out[f"nab_{name}_{suffix}_threshold"] = float(threshold)
    return out
