"""Advantage estimators and group statistics, on hand-computed values and the gradients they produce."""

import math
import statistics

import pytest
import torch

from grpo_cli.algo.advantages import ADVANTAGE_ESTIMATORS, compute_advantages
from grpo_cli.algo.loss import BatchTotals, policy_loss
from grpo_cli.algo.stats import group_stats, zero_variance_groups
from grpo_cli.config import AlgorithmConfig

EPS = 1e-4


def advantages_of(values, group_size, **algorithm):
    config = AlgorithmConfig(group_size=group_size, std_eps=EPS, **algorithm)
    return compute_advantages(torch.tensor(values, dtype=torch.float64), config)


def test_group_scaling_by_hand():
    # mean 0.25, unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5
    advantages = advantages_of([1.0, 0.0, 0.0, 0.0], 4)
    torch.testing.assert_close(advantages, torch.tensor([0.75, -0.25, -0.25, -0.25], dtype=torch.float64) / (0.5 + EPS))


def test_each_group_is_normalized_separately():
    advantages = advantages_of([1.0, 0.0, 0.0, 0.0, 3.0, 1.0, 1.0, 1.0], 4)
    # the second group is the first shifted and scaled by 2: (r - mean) / std is the same up to eps
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25], dtype=torch.float64) / (0.5 + EPS / 2)
    torch.testing.assert_close(advantages[4:], expected)


def test_batch_scaling_uses_the_std_of_all_rewards():
    values = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    advantages = advantages_of(values, 4, scale_rewards="batch")
    std = statistics.stdev(values)
    expected = [(r - 0.25) / (std + EPS) for r in values[:4]] + [(r - 0.5) / (std + EPS) for r in values[4:]]
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float64))


def test_no_scaling_only_subtracts_the_group_mean():
    advantages = advantages_of([2.0, 0.0, 1.0, 1.0, 0.0, 5.0], 3, scale_rewards="none")
    torch.testing.assert_close(advantages, torch.tensor([1.0, -1.0, 0.0, -1.0, -2.0, 3.0], dtype=torch.float64))


def test_rloo_subtracts_the_mean_of_the_other_completions():
    # r_i - mean of the other three: 1 - 0, 0 - 1/3; 2 - 2/3, 0 - 4/3, 1 - 1, 1 - 1
    advantages = advantages_of([1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 1.0, 1.0], 4, advantage="rloo")
    expected = [1.0, -1 / 3, -1 / 3, -1 / 3, 4 / 3, -4 / 3, 0.0, 0.0]
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float64))


def test_reinforce_pp_normalizes_group_centered_rewards_over_the_batch():
    # centered: 0.75, -0.25 x 3 | 1, -1, 0, 0; their mean is 0, their unbiased std sqrt(2.75 / 7)
    advantages = advantages_of([1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 1.0, 1.0], 4, advantage="reinforce_pp")
    centered = [0.75, -0.25, -0.25, -0.25, 1.0, -1.0, 0.0, 0.0]
    expected = [c / (math.sqrt(2.75 / 7) + EPS) for c in centered]
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize(
    "advantage,expected",
    [
        # group stds 0.5 and sqrt(4/3) (unbiased)
        ("grpo", [0.75 / (0.5 + EPS), -0.25 / (0.5 + EPS), 1 / (math.sqrt(4 / 3) + EPS), -1 / (math.sqrt(4 / 3) + EPS)]),
        # 1 - 0, 0 - 1/3; 1 - (-1/3), -1 - 1/3
        ("rloo", [1.0, -1 / 3, 4 / 3, -4 / 3]),
        # centered 0.75, -0.25 x 3, 1, -1, 1, -1: mean 0, sum of squares 4.75
        ("reinforce_pp", [c / (math.sqrt(4.75 / 7) + EPS) for c in (0.75, -0.25, 1.0, -1.0)]),
    ],
)
def test_each_estimator_gives_the_hand_computed_reinforce_gradient(advantage, expected):
    # groups [1, 0, 0, 0] and [1, -1, 1, -1] (G = 4); completions 0, 1, 4, 5 (lengths 2, 1, 3, 2) are checked.
    # On-policy ppo_clip with seq_mean: d loss / d logp_it = -A_i / (N |y_i|), N = 8.
    rewards = [1.0, 0.0, 0.0, 0.0, 1.0, -1.0, 1.0, -1.0]
    config = AlgorithmConfig(group_size=4, std_eps=EPS, advantage=advantage)
    advantages = compute_advantages(torch.tensor(rewards, dtype=torch.float64), config)
    lengths = torch.tensor([2, 1, 1, 1, 3, 2, 1, 1])
    mask = torch.arange(3)[None, :] < lengths[:, None]
    logp = torch.full((8, 3), -1.0, dtype=torch.float64, requires_grad=True)
    loss, _ = policy_loss(logp, None, None, advantages, mask, config, totals=BatchTotals.of(mask, 3))
    loss.backward()
    checked = [0, 1, 4, 5]
    torch.testing.assert_close(advantages[checked], torch.tensor(expected, dtype=torch.float64))
    for i, a in zip(checked, expected):
        n = int(lengths[i])
        torch.testing.assert_close(logp.grad[i, :n], torch.full((n,), -a / (8 * n), dtype=torch.float64))


@pytest.mark.parametrize(
    "advantage,scale_rewards",
    [("grpo", "batch"), ("grpo", "none")] + [(name, "group") for name in ADVANTAGE_ESTIMATORS.names()],
)
def test_zero_variance_groups_have_exactly_zero_advantage(advantage, scale_rewards):
    # 0.1 + 0.1 + 0.1 rounds, so an unguarded (r - mean) would be ~1e-17, not 0
    values = [0.1, 0.1, 0.1, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    advantages = advantages_of(values, 3, advantage=advantage, scale_rewards=scale_rewards)
    assert torch.all(advantages[:3] == 0) and torch.all(advantages[6:] == 0)
    assert advantages[3] > 0 and advantages[4] < 0


def test_all_zero_variance_batch_gives_zero_policy_gradient_and_says_so():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    config = AlgorithmConfig(group_size=4, kl_coef=0.0)
    advantages = compute_advantages(rewards, config)
    assert torch.all(advantages == 0)

    stats = group_stats(rewards, 4)
    assert stats.zero_variance_frac == 1.0
    assert stats.any_positive_frac == 0.5

    gen = torch.Generator().manual_seed(0)
    logp = (-torch.rand(8, 5, generator=gen)).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(8, 5, generator=gen)  # off-policy: ratios far from 1
    mask = torch.ones(8, 5, dtype=torch.bool)
    totals = BatchTotals.of(mask, 5)
    loss, metrics = policy_loss(logp, old, None, advantages, mask, config, totals=totals)
    loss.backward()
    assert loss.item() == 0 and torch.all(logp.grad == 0)
    assert metrics["clip/low_frac"].item() == 0 and metrics["clip/high_frac"].item() == 0

    # with a KL penalty only the KL gradient is left: d/dlogp of k3 = 1 - exp(ref - logp), over 40 tokens
    ref = logp.detach() - 0.5
    logp.grad = None
    loss, metrics = policy_loss(logp, old, ref, advantages, mask, AlgorithmConfig(group_size=4, kl_coef=0.1), totals=totals)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.full((8, 5), 0.1 * (1 - torch.exp(torch.tensor(-0.5)).item()) / 5 / 8))
    assert metrics["kl/mean"].item() == pytest.approx(torch.exp(torch.tensor(-0.5)).item() + 0.5 - 1, rel=1e-6)


def test_group_stats_by_hand():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    stats = group_stats(rewards, 4)
    assert stats.zero_variance_frac == pytest.approx(2 / 3)
    assert stats.any_positive_frac == pytest.approx(2 / 3)
    assert zero_variance_groups(rewards, 4).tolist() == [True, False, True]
