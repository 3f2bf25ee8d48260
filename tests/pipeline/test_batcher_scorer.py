import numpy as np
import pytest
import torch

from streamdet.errors import BundleError
from streamdet.pipeline.batcher import MicroBatcher
from streamdet.pipeline.scorer import Scorer, bucket_size
from streamdet.pipeline.windows import WindowRequest

from .helpers import DeviationDetector


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def request(i: int) -> WindowRequest:
    return WindowRequest(f"e{i}", np.zeros((4, 2), np.float32), 1, np.array([float(i)]), [("t", 0, i)], True)


def test_flushes_at_max_batch_oldest_first():
    b = MicroBatcher(max_batch=3, max_wait_ms=1000, clock=Clock())
    for i in range(4):
        b.add(request(i))
    assert b.due() and b.full()
    assert [r.entity for r in b.take()] == ["e0", "e1", "e2"]
    assert len(b) == 1 and not b.due()


def test_flushes_when_the_oldest_request_waited_max_wait():
    clock = Clock()
    b = MicroBatcher(max_batch=100, max_wait_ms=500, clock=clock)  # binary-exact steps: no rounding at the edge
    assert not b.due()
    b.add(request(0))
    clock.now += 0.25
    b.add(request(1))
    assert not b.due() and b.oldest_age() == 0.25
    clock.now += 0.125
    assert not b.due()
    clock.now += 0.125
    assert b.due()
    assert [r.entity for r in b.take()] == ["e0", "e1"]
    assert not b.due() and b.take() == []


def test_zero_wait_flushes_every_request():
    b = MicroBatcher(max_batch=100, max_wait_ms=0, clock=Clock())
    b.add(request(0))
    assert b.due()


def test_bucket_sizes():
    assert [bucket_size(n) for n in (1, 2, 3, 5, 8, 9, 64)] == [1, 2, 4, 8, 8, 16, 64]


@pytest.mark.parametrize("bucket", [True, False])
def test_scorer_matches_the_module_row_by_row(bucket):
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(5, 6, 3)).astype(np.float32)  # B=5 is padded to 8 when bucketing
    scores, contrib = Scorer(DeviationDetector(), bucket=bucket).score(windows)
    assert scores.shape == (5, 6) and contrib.shape == (5, 6, 3)
    assert scores.dtype == np.float32 and isinstance(scores, np.ndarray)
    expected = ((windows - windows.mean(axis=1, keepdims=True)) ** 2).mean(axis=-1)
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_scorer_rejects_a_module_with_wrong_output_shapes():
    class Wrong(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(1, 2)), x  # scores [B] instead of [B, L]

    with pytest.raises(BundleError, match="expected"):
        Scorer(Wrong()).score(np.zeros((2, 4, 3), np.float32))


@pytest.mark.parametrize("max_batch, sizes", [(256, [1, 2, 4, 8, 16, 32, 64, 128, 256]), (100, [1, 2, 4, 8, 16, 32, 64, 128])])
def test_warm_up_scores_every_padded_batch_size_the_daemon_can_send(max_batch, sizes):
    """Each shape a live batch can take is seen (twice, then once timed) before the first record, so no first batch
    pays for TorchScript's profiling of a new shape."""
    seen = []

    def module(x):
        seen.append(tuple(x.shape))
        return x.sum(-1), x

    Scorer(module).warm_up(window=5, n_channels=3, max_batch=max_batch)
    assert sorted(set(seen)) == [(b, 5, 3) for b in sizes]
    assert all(seen.count(shape) == 3 for shape in set(seen))


class CostByBatch:
    """A module whose calls advance a fake clock by cost(batch size): the scorer's timing without real time."""

    def __init__(self, cost):
        self.cost, self.now, self.calls = cost, 0.0, []

    def clock(self) -> float:
        return self.now

    def __call__(self, x):
        self.calls.append(x.shape[0])
        self.now += self.cost(x.shape[0])
        return x.sum(-1) * 2.0, x * 3.0


def test_batches_are_chunked_at_the_size_that_costs_least_per_window():
    """Per window, 64 is cheapest (an attention model whose maps leave the caches at 256): a batch of 200 is scored
    as 64 + 64 + 64 + 8 (padded), and the scores are the whole batch's."""
    module = CostByBatch(lambda b: b * (1.0 if b <= 64 else 2.0))
    scorer = Scorer(module, clock=module.clock)
    scorer.warm_up(window=5, n_channels=3, max_batch=256)
    assert scorer.chunk == 64
    module.calls.clear()
    windows = np.random.default_rng(0).normal(size=(200, 5, 3)).astype(np.float32)
    scores, contrib = scorer.score(windows, tail=2)
    assert module.calls == [64, 64, 64, 8]
    np.testing.assert_allclose(scores, windows.sum(-1)[:, -2:] * 2.0, rtol=1e-6)
    np.testing.assert_allclose(contrib, windows[:, -2:] * 3.0, rtol=1e-6)


@pytest.mark.parametrize("cost", [lambda b: 1.0 + b, lambda b: b * (1.0 if b <= 64 else 1.1),
                                  lambda b: b * (1.0 if b <= 8 else 2.0)])
def test_no_chunking_when_the_largest_batch_is_cheapest_or_the_gain_is_small_or_the_best_is_tiny(cost):
    """Per-call overhead (bigger is cheaper), a 10 % gain (under CHUNK_GAIN's fifth), a best size under MIN_CHUNK."""
    module = CostByBatch(cost)
    scorer = Scorer(module, clock=module.clock)
    scorer.warm_up(window=5, n_channels=3, max_batch=256)
    assert scorer.chunk == 0
    module.calls.clear()
    scorer.score(np.zeros((200, 5, 3), np.float32))
    assert module.calls == [256]
