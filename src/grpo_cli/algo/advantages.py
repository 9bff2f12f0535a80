"""Advantage estimators: each completion's reward against the other completions of its prompt.

Rewards arrive flat, [num_prompts x G], group-major: completions 0..G-1 answer prompt 0, G..2G-1 prompt 1, ...
Each estimator is registered under its `algorithm.advantage` name and maps rewards [B] to advantages [B].
A group whose G rewards all tie carries no signal: every estimator gives it exactly 0 (not merely eps-small).

passk and pkpo optimize pass@k, k = `pass_k_at(config, step)`, through the k-subsets of each group: G rewards
sorted ascending, v_1 <= ... <= v_G, the reward of a k-subset I is its best, max_{j in I} v_j (1 when any
completion of I is correct, for 1/0 rewards), and it is v_j for C(j-1, k-1) of the C(G, k) subsets. Sorting
makes every sum over subsets a weighted (cumulative) sum over the G rewards: O(G log G) per group.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from math import comb
from typing import Callable

import torch

from grpo_cli.algo.registry import Registry
from grpo_cli.algo.stats import zero_variance_groups
from grpo_cli.config import AlgorithmConfig

AdvantageEstimator = Callable[[torch.Tensor, AlgorithmConfig], torch.Tensor]
ADVANTAGE_ESTIMATORS: Registry[AdvantageEstimator] = Registry("algorithm.advantage")


def compute_advantages(rewards: torch.Tensor, config: AlgorithmConfig, step: int) -> torch.Tensor:
    """Advantages [B] of rewards [B] (groups of config.group_size) at training step `step`, by the estimator
    config.advantage names; it sees config.pass_k as this step's k (`pass_k_at`)."""
    config = dataclasses.replace(config, pass_k=pass_k_at(config, step))
    return ADVANTAGE_ESTIMATORS[config.advantage](rewards, config)


def pass_k_at(config: AlgorithmConfig, step: int) -> int:
    """The k that passk and pkpo optimize at training step `step` (1-based): algorithm.pass_k, and 1 from step
    algorithm.pass_k_anneal_steps + 1 on when that is set: PKPO's k annealing (Walder & Karkhanis 2025), pass@k
    early for exploration, pass@1 late to sharpen what it found."""
    if config.pass_k_anneal_steps and step > config.pass_k_anneal_steps:
        return 1
    return config.pass_k


@ADVANTAGE_ESTIMATORS.register("grpo")
def grpo(rewards: torch.Tensor, config: AlgorithmConfig) -> torch.Tensor:
    """A_i = (r_i - mean_g) / (std + eps), mean_g the mean reward of i's group (Shao et al. 2024, DeepSeekMath,
    arXiv:2402.03300).

    `algorithm.scale_rewards` picks the std:
      group  std_g, the std of i's group (GRPO)
      batch  the std of all B rewards (robust when a group's std is tiny)
      none   no division: A_i = r_i - mean_g (Dr. GRPO, Liu et al. 2025, arXiv:2503.20783)
    std is the unbiased (Bessel-corrected) estimate, eps = algorithm.std_eps.
    """
    groups = rewards.view(-1, config.group_size)
    centered = groups - groups.mean(dim=1, keepdim=True)
    if config.scale_rewards == "group":
        advantages = centered / (groups.std(dim=1, keepdim=True) + config.std_eps)
    elif config.scale_rewards == "batch":
        advantages = centered / (rewards.std() + config.std_eps)
    else:
        advantages = centered
    return _zero_ties(advantages, rewards, config.group_size)


@ADVANTAGE_ESTIMATORS.register("rloo")
def rloo(rewards: torch.Tensor, config: AlgorithmConfig) -> torch.Tensor:
    """A_i = r_i - (1 / (G - 1)) sum_{j != i} r_j = G / (G - 1) (r_i - mean_g): the leave-one-out baseline, no
    std division (Kool et al. 2019, "Buy 4 REINFORCE Samples, Get a Baseline for Free!"; Ahmadian et al. 2024,
    "Back to Basics", arXiv:2402.14740). The baseline does not depend on r_i, so the gradient stays unbiased.
    """
    groups = rewards.view(-1, config.group_size)
    G = config.group_size
    advantages = (groups - groups.mean(dim=1, keepdim=True)) * (G / (G - 1))
    return _zero_ties(advantages, rewards, G)


@ADVANTAGE_ESTIMATORS.register("reinforce_pp")
def reinforce_pp(rewards: torch.Tensor, config: AlgorithmConfig) -> torch.Tensor:
    """A_i = (c_i - mean_B c) / (std_B c + eps) with c_i = r_i - mean_g: the group mean as baseline, then one
    normalization over the whole batch (REINFORCE++-baseline, Hu et al. 2025, arXiv:2501.03262). The batch std
    replaces GRPO's per-group std, which inflates groups whose rewards barely differ.

    mean_B and std_B (unbiased) run over the B completions; veRL's reinforce_plus_plus_baseline weighs them by
    tokens instead. eps = algorithm.std_eps.
    """
    groups = rewards.view(-1, config.group_size)
    centered = (groups - groups.mean(dim=1, keepdim=True)).view(-1)
    advantages = (centered - centered.mean()) / (centered.std() + config.std_eps)
    return _zero_ties(advantages, rewards, config.group_size)


@ADVANTAGE_ESTIMATORS.register("passk")
def passk(rewards: torch.Tensor, config: AlgorithmConfig) -> torch.Tensor:
    """A_i = (m_i - R) / (sigma + eps): the analytical advantage of Pass@k Training (Chen et al. 2025, "Pass@k
    Training for Adaptively Balancing Exploration and Exploitation of Large Reasoning Models", arXiv:2508.10751).

    Every k-subset of the group is one sample whose reward is its best; R and sigma are their mean and
    (population) std, m_i the mean reward of the subsets that hold completion i, and A_i the mean of their
    normalized rewards (reward - R) / sigma. With v sorted ascending and C(a, b) binomials:

      R       = sum_j C(j-1, k-1) v_j / C(G, k)                      (the unbiased pass@k of the group)
      sigma^2 = sum_j C(j-1, k-1) (v_j - R)^2 / C(G, k)
      m_i     = (C(i-1, k-1) v_i + sum_{j>i} C(j-2, k-2) v_j) / C(G-1, k-1)

    For 1/0 rewards, c of G correct: R = 1 - C(G-c, k) / C(G, k), sigma = sqrt(R (1 - R)), a correct completion
    gets (1 - R) / sigma and a wrong one (1 - R - C(G-c-1, k-1) / C(G-1, k-1)) / sigma, the paper's closed form.
    A group whose every k-subset holds a correct completion (G - c < k) has sigma = 0 and gets 0: pass@k of that
    prompt is already 1. k = 1 is GRPO with the population std: A_i = (r_i - mean_g) / (std_g + eps), std_g
    without Bessel's correction (advantage=grpo divides by the corrected one). eps = algorithm.std_eps.
    """
    k = config.pass_k
    coefficients = _subset_coefficients(config.group_size, k)
    values, order = rewards.double().view(-1, config.group_size).sort(dim=1)
    R = (coefficients.is_max * values).sum(dim=1, keepdim=True)
    sigma = (coefficients.is_max * (values - R) ** 2).sum(dim=1, keepdim=True).sqrt()
    # sum_{j>i} C(j-2, k-2) v_j: the suffix sums of the next position's weight times its reward.
    above = (coefficients.max_above * values).flip(1).cumsum(1).flip(1)
    subset_means = coefficients.self_max * values + torch.nn.functional.pad(above[:, 1:], (0, 1))
    advantages = (subset_means - R) / (sigma + config.std_eps)
    constant = values[:, k - 1] == values[:, -1]  # every k-subset's best is the group's best
    return _unsorted(advantages.masked_fill(constant[:, None], 0.0), order).to(rewards.dtype)


@ADVANTAGE_ESTIMATORS.register("pkpo")
def pkpo(rewards: torch.Tensor, config: AlgorithmConfig) -> torch.Tensor:
    """A_i = G s_i^(loo-1): PKPO's unbiased pass@k reward transformation with its k-1 leave-one-out baseline
    (Walder & Karkhanis 2025, "Pass@K Policy Optimization", arXiv:2505.15201, eq. 33, the variant of lowest
    variance in its experiments).

    s_i^(loo-1) = (1 / C(G, k)) sum_{k-subsets I holding i} (max_{j in I} v_j - max_{j in I, j != i} v_j):
    what completion i adds to the best reward of each k-subset it is in, over the best of the other k-1. The sum
    over i of s_i grad log pi(y_i) is an unbiased estimate of grad E[max of k rewards] (pass@k for 1/0
    rewards): the baseline, the best of the other k-1, does not depend on y_i. With v sorted ascending the
    terms of j > i cancel and

      s_i = sum_{j<i} C(j-1, k-2) (v_i - v_j) / C(G, k)     >= 0: a completion earns only over worse ones

    For 1/0 rewards, c of G correct: a correct completion gets k C(G-c, k-1) / C(G-1, k-1) (0 once G - c < k - 1:
    the prompt is solved), a wrong one 0. The factor G makes seq_mean's mean over completions the paper's sum
    over the group. At k = 1 no other member of the subset is left to compare with: pkpo is rloo's
    leave-one-out baseline, A_i = r_i - mean_{j != i} r_j, exactly (rloo's function).
    """
    k = config.pass_k
    if k == 1:
        return rloo(rewards, config)
    G = config.group_size
    coefficients = _subset_coefficients(G, k)
    values, order = rewards.double().view(-1, G).sort(dim=1)
    # sum_{j<i} C(j-1, k-2) v_j: prefix sums; C(j-1, k-2) / C(G-1, k-1) is max_above at position j + 1.
    below = torch.nn.functional.pad((coefficients.max_above[1:] * values[:, :-1]).cumsum(1), (1, 0))
    advantages = k * (coefficients.self_max * values - below)
    return _zero_ties(_unsorted(advantages, order).to(rewards.dtype), rewards, G)


@dataclasses.dataclass(frozen=True)
class _SubsetCoefficients:
    """Weights [G] over the sorted positions j = 1..G (index j - 1) of a group's k-subsets, in float64."""

    is_max: torch.Tensor  # C(j-1, k-1) / C(G, k): the share of all k-subsets whose best is position j
    self_max: torch.Tensor  # C(j-1, k-1) / C(G-1, k-1): the share of the subsets holding j whose best is j
    max_above: torch.Tensor  # C(j-2, k-2) / C(G-1, k-1): the share of the subsets holding any i < j whose best is j


@lru_cache(maxsize=64)
def _subset_coefficients(G: int, k: int) -> _SubsetCoefficients:
    # Python's int / int rounds the exact ratio of any two binomials once: no overflow at large G.
    def ratios(numerators, denominator):
        return torch.tensor([a / denominator for a in numerators], dtype=torch.float64)

    positions = range(1, G + 1)
    return _SubsetCoefficients(
        is_max=ratios([comb(j - 1, k - 1) for j in positions], comb(G, k)),
        self_max=ratios([comb(j - 1, k - 1) for j in positions], comb(G - 1, k - 1)),
        max_above=ratios([comb(j - 2, k - 2) if j >= 2 and k >= 2 else 0 for j in positions], comb(G - 1, k - 1)),
    )


def _unsorted(sorted_values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Flat [B] values back in the group's original order, `order` the indices sort() returned."""
    return torch.empty_like(sorted_values).scatter_(1, order, sorted_values).view(-1)


def _zero_ties(advantages: torch.Tensor, rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    ties = zero_variance_groups(rewards, group_size)[:, None]
    return advantages.view(-1, group_size).masked_fill(ties, 0.0).view(-1)
