"""Advantage estimators: each completion's reward against the other completions of its prompt.

Rewards arrive flat, [num_prompts x G], group-major: completions 0..G-1 answer prompt 0, G..2G-1 prompt 1, ...
Each estimator is registered under its `algorithm.advantage` name and maps rewards [B] to advantages [B].
A group whose G rewards all tie carries no signal: every estimator gives it exactly 0 (not merely eps-small).
"""

from __future__ import annotations

from typing import Callable

import torch

from grpo_cli.algo.registry import Registry
from grpo_cli.algo.stats import zero_variance_groups
from grpo_cli.config import AlgorithmConfig

AdvantageEstimator = Callable[[torch.Tensor, AlgorithmConfig], torch.Tensor]
ADVANTAGE_ESTIMATORS: Registry[AdvantageEstimator] = Registry("algorithm.advantage")


def compute_advantages(rewards: torch.Tensor, config: AlgorithmConfig) -> torch.Tensor:
    """Advantages [B] of rewards [B] (groups of config.group_size) by the estimator config.advantage names."""
    return ADVANTAGE_ESTIMATORS[config.advantage](rewards, config)


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


def _zero_ties(advantages: torch.Tensor, rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    ties = zero_variance_groups(rewards, group_size)[:, None]
    return advantages.view(-1, group_size).masked_fill(ties, 0.0).view(-1)
