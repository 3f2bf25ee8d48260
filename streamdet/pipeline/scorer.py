"""Run the detector on a micro-batch: numpy in, numpy out; the only module of the pipeline that imports torch.

Batch sizes are padded up to a power of two (row independence makes the padding rows harmless) so a TorchScript
module sees a handful of shapes instead of one per batch size; each new shape costs a re-specialisation.

Bigger batches are not cheaper per window for every model: attention maps of 256 windows ([256, heads, L, L]) leave
the CPU's caches, and the Anomaly Transformer's bundle cost 7.1 ms a window at batch 256 against 4.3 at 64. The
warm-up times each size it scores anyway, and a batch larger than the size that costs least per window is scored
in chunks of that size, when it saves at least a fifth (CHUNK_GAIN); row independence makes the scores the same.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

import numpy as np
import torch

from ..bundle import tail_steps
from ..errors import BundleError

log = logging.getLogger(__name__)

CHUNK_GAIN = 0.8  # a smaller batch becomes the chunk only at <= this fraction of the largest's time per window
MIN_CHUNK = 16  # nor below this size (per-call overhead; a noisy start-up must not pick a tiny chunk)


def bucket_size(batch: int) -> int:
    """The smallest power of two >= batch."""
    return 1 << max(0, batch - 1).bit_length()


class Scorer:
    """Calls `module(x [B, L, C] float32) -> (scores [B, L], contributions [B, L, C])` under inference_mode; with
    `tail`, returns the last `tail` steps only (a bundle's module computes the whole window)."""

    def __init__(self, module: Callable, threads: int = 0, bucket: bool = True,
                 clock: Callable[[], float] = time.perf_counter):
        self.module = module
        self.bucket = bucket
        self.chunk = 0  # 0: any batch in one call; else larger batches are scored in chunks of this size
        self._clock = clock
        if threads > 0:
            torch.set_num_threads(threads)  # process-wide: the scorer is the only heavy torch user in the daemon
            log.info("scorer threads=%d", threads)

    def score(self, windows: np.ndarray, tail: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
        """windows float32 [B, L, C] -> (scores float32 [B, T], contributions float32 [B, T, C]), T = tail or L."""
        B, L, C = windows.shape
        if self.chunk and B > self.chunk:
            parts = [self.score(windows[i:i + self.chunk], tail) for i in range(0, B, self.chunk)]
            return np.concatenate([s for s, _ in parts]), np.concatenate([c for _, c in parts])
        padded = self._pad(np.ascontiguousarray(windows, dtype=np.float32))  # [B', L, C], B' >= B
        with torch.inference_mode():
            scores, contrib = self.module(torch.from_numpy(padded))
        scores = scores.detach().cpu().numpy()  # [B', L]
        contrib = contrib.detach().cpu().numpy()  # [B', L, C]
        Bp = padded.shape[0]
        if scores.shape != (Bp, L) or contrib.shape != (Bp, L, C):
            raise BundleError(f"model output shapes scores {scores.shape}, contributions {contrib.shape}; "
                              f"expected {(Bp, L)} and {(Bp, L, C)}")
        T = tail_steps(tail, L)
        return (scores[:B, L - T:].astype(np.float32, copy=False),
                contrib[:B, L - T:].astype(np.float32, copy=False))

    def warm_up(self, window: int, n_channels: int, max_batch: int) -> None:
        """Score zeros twice at every padded batch size up to max_batch, before the first real batch: a TorchScript
        module profiles and optimises each new input shape on its first calls (the first batch of 256 took 73 ms
        instead of 21), which would otherwise land on the first live records. A third call of each size, timed,
        sets the chunk size (`choose_chunk`) when one of them could be it."""
        largest = bucket_size(max_batch) if self.bucket else max_batch
        sizes = [1 << k for k in range(largest.bit_length()) if 1 << k < largest] + [largest]
        per_window = {}
        self.chunk = 0
        timed = largest > MIN_CHUNK  # else no size could become the chunk (a per-entity bundle warms sizes 1, 2)
        for size in sizes:
            zeros = np.zeros((size, window, n_channels), dtype=np.float32)
            for _ in range(2):
                self.score(zeros)
            if timed:
                started = self._clock()
                self.score(zeros)
                per_window[size] = (self._clock() - started) / size
        self.chunk = choose_chunk(per_window) if timed else 0
        if self.chunk:
            log.info("scoring batches over %d windows in chunks of %d (%.2f against %.2f ms a window)", self.chunk,
                     self.chunk, per_window[self.chunk] * 1e3, per_window[max(per_window)] * 1e3)

    def _pad(self, windows: np.ndarray) -> np.ndarray:
        B = windows.shape[0]
        target = bucket_size(B) if self.bucket else B
        if target == B:
            return windows
        pad = np.repeat(windows[-1:], target - B, axis=0)  # [target - B, L, C]: copies of the last row
        return np.concatenate([windows, pad], axis=0)  # [target, L, C]


def choose_chunk(per_window: dict[int, float]) -> int:
    """The batch size that costs least per window (seconds by size; of sizes within 5 % of it, the largest), if it
    is at least MIN_CHUNK and saves at least 1 - CHUNK_GAIN of the largest size's time per window; else 0 (no
    chunking)."""
    largest = max(per_window)
    candidates = {size: t for size, t in per_window.items() if MIN_CHUNK <= size < largest}
    if not candidates:
        return 0
    least = min(candidates.values())
    best = max(size for size, t in candidates.items() if t <= least * 1.05)  # of sizes about as cheap, the largest
    return best if candidates[best] <= CHUNK_GAIN * per_window[largest] else 0


def grouped_scorers(bundles: list, previous: list["GroupedScorer"] = ()) -> tuple[dict, dict[str, str], dict[str, str]]:
    """Bundles that share an architecture, scored together: (sha256 -> (its group's GroupedScorer, its place in the
    group), sha256 -> why a bundle that shares an architecture cannot be scored with the others, sha256 -> why a
    bundle scores non-finite values: to be refused). `previous`: the scorers served so far (a reload restacks their
    unchanged members instead of rebuilding them)."""
    from ..bundle.grouped import build_groups

    groups, failed, broken = build_groups(bundles, [scorer.group for scorer in previous])
    members = {}
    for group in groups:
        scorer = GroupedScorer(group)
        members.update({sha: (scorer, i) for sha, i in group.index.items()})
    return members, failed, broken


class GroupedScorer:
    """Scores the rows of several bundles of one architecture in one call (streamdet/bundle/grouped.py): numpy in,
    numpy out, like Scorer. No padding: the eager vmapped call is not specialised per batch size."""

    def __init__(self, group):
        self.group = group

    def score(self, windows: np.ndarray, members: list[int], tail: Optional[int] = None) \
            -> tuple[np.ndarray, np.ndarray]:
        """windows float32 [B, L, C], members [B] (row b's bundle, its place in the group) -> scores [B, T],
        contributions [B, T, C] of the last T = tail (or L) steps."""
        raw = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        with torch.inference_mode():
            scores, contrib = self.group.score(raw, torch.as_tensor(members, dtype=torch.long), tail)
        return scores.numpy(), contrib.numpy()

    def score_member(self, windows: np.ndarray, member: int, tail: Optional[int] = None) \
            -> tuple[np.ndarray, np.ndarray]:
        """Rows of one bundle of the group only (many of them: a catch-up), in one plain call of its model."""
        raw = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        with torch.inference_mode():
            scores, contrib = self.group.score_member(raw, member, tail)
        return scores.numpy(), contrib.numpy()
