"""tools/interp_ceiling.py ranks channels by their own scale of moves: a small channel's jump beats a noisy channel's
ordinary wobble, and a jump seen in the first row is remembered by the largest-move-so-far ranking."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

import interp_ceiling  # noqa: E402


def test_a_quiet_channel_s_jump_outranks_a_noisy_channel_s_wobble():
    rng = np.random.default_rng(0)
    train = np.column_stack([rng.normal(0, 10, 4000), rng.normal(0, 0.1, 4000)])
    test = np.column_stack([rng.normal(0, 10, 400), rng.normal(0, 0.1, 400)])
    test[200, 1] += 2.0  # 20 of its own standard deviations, a fifth of the noisy channel's
    scale = interp_ceiling.move_scale(train, window=50)
    rates = interp_ceiling.segment_rates(test, scale, 200, 210, {1}, window=50, firsts=(1, 5))
    assert rates["largest move over its first 1 rows"] == 1.0
    assert rates["largest move over its first 5 rows"] == 1.0, "the first row's jump is kept by the running largest"
    assert rates["its row 5 alone"] == 0.0, "four rows later the jump is gone and the noisy channel leads"


def test_the_cross_channel_residual_ranks_a_channel_breaking_its_relations_above_two_moving_together():
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1, 4000)
    train = np.column_stack([base + rng.normal(0, 0.05, 4000), base + rng.normal(0, 0.05, 4000),
                             rng.normal(0, 1, 4000)])
    residual = interp_ceiling.cross_channel_residual(train, ridge=1e-3)
    row = np.array([[4.0, 4.0, 2.0]])  # channels 0 and 1 far out but together; channel 2 moderately out, alone
    assert interp_ceiling.ranked(residual(row)[0])[0] == 2
    assert interp_ceiling.ranked(np.abs(row[0]))[0] != 2, "the values alone rank the pair first"


def test_std_scaling_divides_by_each_channel_s_train_spread():
    rng = np.random.default_rng(2)
    train = np.column_stack([rng.normal(0, 4, 4000), rng.normal(0, 1, 4000)])
    ratio = interp_ceiling.move_scale(train, window=50, kind="std")
    assert abs(ratio[0] / ratio[1] - 4.0) < 0.2
