"""Group statistics that tell whether a batch can teach anything; zero_variance_groups is DAPO's filter.

A group whose G rewards all tie (all wrong, or all right) has zero advantage everywhere: it costs a learner
pass and contributes only the KL term. Rewards are flat [num_prompts x G], group-major.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GroupStats:
    zero_variance_frac: float  # groups whose rewards all tie
    any_positive_frac: float  # groups with at least one reward > 0


def zero_variance_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Which groups tie.

    Args:
        rewards: [num_prompts * G], group-major.
        group_size: G.
    Returns:
        [num_prompts] bool, True where every reward of the group is the same.
    """
    groups = rewards.view(-1, group_size)
    return groups.amax(dim=1) == groups.amin(dim=1)


def group_stats(rewards: torch.Tensor, group_size: int) -> GroupStats:
    """What a batch's groups can teach.

    Args:
        rewards: [num_prompts * G], group-major.
        group_size: G.
    Returns:
        GroupStats: fractions of tied and of any-positive groups.
    """
    ties = zero_variance_groups(rewards, group_size)
    return GroupStats(
        zero_variance_frac=ties.float().mean().item(),
        any_positive_frac=(rewards.view(-1, group_size) > 0).any(dim=1).float().mean().item(),
    )
