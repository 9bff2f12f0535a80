"""Group-relative advantages: each completion is scored against the other completions of its prompt.

Rewards arrive flat, [num_prompts x G], group-major: completions 0..G-1 answer prompt 0, G..2G-1 prompt 1, ...
"""

from __future__ import annotations

from typing import Literal

import torch

from grpo_cli.algo.stats import zero_variance_groups


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    scale_rewards: Literal["group", "batch", "none"],
    std_eps: float,
) -> torch.Tensor:
    """A_i = (r_i - mean_g) / (std + eps) for rewards [B] laid out as groups of G = group_size.

    mean_g is the mean reward of i's group. `scale_rewards` (algorithm.scale_rewards) picks the std:
      group  std_g, the std of i's group (GRPO)
      batch  the std of all B rewards (robust when a group's std is tiny)
      none   no division: A_i = r_i - mean_g (Dr. GRPO)
    std is the unbiased (Bessel-corrected) estimate, eps = std_eps. A group whose rewards all tie
    carries no signal: its advantages are exactly 0 (not merely eps-small), whatever the scaling.
    """
    groups = rewards.view(-1, group_size)
    centered = groups - groups.mean(dim=1, keepdim=True)
    if scale_rewards == "group":
        advantages = centered / (groups.std(dim=1, keepdim=True) + std_eps)
    elif scale_rewards == "batch":
        advantages = centered / (rewards.std() + std_eps)
    else:
        advantages = centered
    ties = zero_variance_groups(rewards, group_size)[:, None]
    return advantages.masked_fill(ties, 0.0).view(-1)
