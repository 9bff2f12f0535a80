"""Reward shaping between the verifier and the advantage estimator.

Rewards and components arrive flat, [num_prompts x G], group-major (see advantages.py).
"""

from __future__ import annotations

import torch


def overlong_penalty(lengths: torch.Tensor, budget: int, buffer: int) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, arXiv:2503.14476, section 3.4), added to the reward:

        0                              |y| <= L - buffer
        ((L - buffer) - |y|) / buffer  L - buffer < |y| <= L     (falls linearly to -1 at the budget)
        -1                             |y| > L

    lengths [B]: completion lengths in tokens; budget L = sampler.max_new_tokens; buffer =
    algorithm.overlong_buffer (> 0). Returns [B] penalties in [-1, 0].
    """
    return ((budget - buffer - lengths.to(torch.float32)) / buffer).clamp(-1.0, 0.0)


def per_component_rewards(
    components: torch.Tensor, weights: torch.Tensor, group_size: int, eps: float
) -> torch.Tensor:
    """r_i = sum_c w_c (x_ic - mean_g x_c) / (std_g x_c + eps): each reward component normalized within its
    group, then weighted and summed (GDPO's group reward-decoupled normalization; TRL
    multi_objective_aggregation=normalize_then_sum with reward_weights). A component whose values tie within a group adds 0 there,
    so a high-variance component (length) cannot drown a low-variance one (correctness).

    components [B, C]: unweighted values x_ic, NaN where a component has none (a reward function's None): left
    out of its group's mean and std and adding 0, as TRL's nanmean and nansum do; weights [C]: w_c; std_g is
    unbiased, eps = algorithm.std_eps. Returns the rewards [B] the advantage estimator then normalizes as usual.
    """
    groups = components.view(-1, group_size, components.shape[-1])
    present = ~groups.isnan()
    count = present.sum(dim=1, keepdim=True)
    mean = groups.nan_to_num(0.0).sum(dim=1, keepdim=True) / count.clamp(min=1)
    centered = groups - mean
    std = (centered.nan_to_num(0.0).square().sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)).sqrt()
    normalized = centered / (std + eps)
    highest = torch.where(present, groups, -torch.inf).amax(dim=1, keepdim=True)
    ties = highest <= torch.where(present, groups, torch.inf).amin(dim=1, keepdim=True)
    normalized = normalized.masked_fill(ties | ~present, 0.0)
    return (normalized * weights.to(normalized.dtype)).sum(dim=-1).view(-1)
