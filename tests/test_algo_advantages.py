"""Group advantages, reward combination and group statistics, on hand-computed values."""

import statistics

import pytest
import torch

from grpo_cli.algo.advantages import group_advantages
from grpo_cli.algo.loss import policy_loss
from grpo_cli.algo.stats import group_stats, zero_variance_groups
from grpo_cli.config import AlgorithmConfig

EPS = 1e-4


def test_group_scaling_by_hand():
    # mean 0.25, unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    advantages = group_advantages(rewards, 4, "group", EPS)
    torch.testing.assert_close(advantages, torch.tensor([0.75, -0.25, -0.25, -0.25], dtype=torch.float64) / (0.5 + EPS))


def test_each_group_is_normalized_separately():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 3.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    advantages = group_advantages(rewards, 4, "group", EPS)
    # the second group is the first shifted and scaled by 2: (r - mean) / std is the same up to eps
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25], dtype=torch.float64) / (0.5 + EPS / 2)
    torch.testing.assert_close(advantages[4:], expected)


def test_batch_scaling_uses_the_std_of_all_rewards():
    values = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    advantages = group_advantages(torch.tensor(values, dtype=torch.float64), 4, "batch", EPS)
    std = statistics.stdev(values)
    expected = [(r - 0.25) / (std + EPS) for r in values[:4]] + [(r - 0.5) / (std + EPS) for r in values[4:]]
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float64))


def test_no_scaling_only_subtracts_the_group_mean():
    rewards = torch.tensor([2.0, 0.0, 1.0, 1.0, 0.0, 5.0], dtype=torch.float64)
    advantages = group_advantages(rewards, 3, "none", EPS)
    torch.testing.assert_close(advantages, torch.tensor([1.0, -1.0, 0.0, -1.0, -2.0, 3.0], dtype=torch.float64))


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_zero_variance_groups_have_exactly_zero_advantage(scale_rewards):
    # 0.1 + 0.1 + 0.1 rounds, so an unguarded (r - mean) would be ~1e-17, not 0
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    advantages = group_advantages(rewards, 3, scale_rewards, EPS)
    assert torch.all(advantages[:3] == 0) and torch.all(advantages[6:] == 0)
    assert advantages[3] > 0 and advantages[4] < 0


def test_all_zero_variance_batch_gives_zero_policy_gradient_and_says_so():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    config = AlgorithmConfig(group_size=4, kl_coef=0.0)
    advantages = group_advantages(rewards, 4, "group", EPS)
    assert torch.all(advantages == 0)

    stats = group_stats(rewards, 4)
    assert stats.zero_variance_frac == 1.0
    assert stats.any_positive_frac == 0.5
    assert not stats.keep_mask.any()

    gen = torch.Generator().manual_seed(0)
    logp = (-torch.rand(8, 5, generator=gen)).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(8, 5, generator=gen)  # off-policy: ratios far from 1
    mask = torch.ones(8, 5, dtype=torch.bool)
    loss, metrics = policy_loss(logp, old, None, advantages, mask, config)
    loss.backward()
    assert loss.item() == 0 and torch.all(logp.grad == 0)
    assert metrics["clip/low_frac"].item() == 0 and metrics["clip/high_frac"].item() == 0

    # with a KL penalty only the KL gradient is left: d/dlogp of k3 = 1 - exp(ref - logp), over 40 tokens
    ref = logp.detach() - 0.5
    logp.grad = None
    loss, metrics = policy_loss(logp, old, ref, advantages, mask, AlgorithmConfig(group_size=4, kl_coef=0.1))
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.full((8, 5), 0.1 * (1 - torch.exp(torch.tensor(-0.5)).item()) / 5 / 8))
    assert metrics["kl/mean"].item() == pytest.approx(torch.exp(torch.tensor(-0.5)).item() + 0.5 - 1, rel=1e-6)


def test_group_stats_by_hand():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    stats = group_stats(rewards, 4)
    assert stats.zero_variance_frac == pytest.approx(2 / 3)
    assert stats.any_positive_frac == pytest.approx(2 / 3)
    assert zero_variance_groups(rewards, 4).tolist() == [True, False, True]
    assert stats.keep_mask.tolist() == [False, True, False]
