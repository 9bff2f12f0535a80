"""The GRPO objective: a policy-gradient loss per token, a KL penalty toward a frozen reference, an optional
entropy bonus, reduced over the batch. The policy loss and the reduction are registered functions, selected by
`algorithm.policy_loss` and `algorithm.loss_agg`; the KL estimator lives in kl.py.

For completion i (token t, loss mask m_it), advantage A_i, policy pi, the policy that sampled the batch
pi_old, the reference pi_ref, and the log-ratio l_it = log pi(y_it) - log pi_old(y_it):

  importance ratio   rho_it = exp(l_it)                                       importance_level = token
                     rho_it = rho_i = exp(sum_t m_it l_it / |y_i|)            importance_level = sequence (GSPO)
                     (the exponent clamped to +-20, as veRL: one extreme token clips instead of overflowing)
  policy loss        p_it = POLICY_LOSSES[policy_loss](log pi(y_it), rho_it, A_i)     e.g. ppo_clip:
                     p_it = -min(rho_it A_i, clip(rho_it, 1 - eps_low, 1 + eps_high) A_i)
  TIS correction     w_it = min(pi_old(y_it) / pi_sampler(y_it), tis_cap)     (w = 1 when tis_cap is null)
  entropy mask       e_it = 1 for the entropy_mask_top fraction of the batch's loss tokens with the highest
                     entropy, else 0 (e = 1 when entropy_mask_top is 1), and 0 for the tokens Clip-Cov draws
                     (`clip_cov_mask`, when clip_cov_frac > 0)
  per-token loss     L_it = e_it w_it p_it + beta KL_it - entropy_coef H_it   (KL_it: kl.py, beta = kl_coef,
                                                                              H_it the policy's entropy)

and the batch loss aggregates L_it over the tokens the loss sees, LOSS_AGGREGATIONS[loss_agg]:

  seq_mean       (1/N) sum_i (1/|y_i|) sum_t m_it L_it      mean per completion, then over completions (GRPO)
  token_mean     (1/sum_it m_it) sum_it m_it L_it           every token weighs the same (DAPO)
  seq_sum_norm   (1/(N L_max)) sum_it m_it L_it             L_max = sampler.max_new_tokens, a constant (Dr. GRPO)

N counts completions with at least one loss token. With mask_truncated, completions cut at the length limit
get m_it = 0 everywhere (DAPO overlong filtering).

On-policy (pi_old = pi detached, w = 1) rho = 1 and, for ppo_clip, grad L_it = -A_i grad log pi(y_it) + beta
grad KL_it: the group-baseline REINFORCE gradient. w_it corrects for the sampling engine's numerics differing
from the learner's (Yao et al. 2025, truncated importance sampling); it is a constant, not differentiated.

A batch may be processed in micro-batches: each passes `BatchTotals` of the whole batch, so its loss is its
exact share of the batch loss, and summing micro-batch losses (and gradients) gives the loss in one go.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from grpo_cli.algo.kl import kl_estimate
from grpo_cli.algo.registry import Registry
from grpo_cli.config import AlgorithmConfig

# |log-ratio| above this is clamped before exp(): exp(20) ~ 5e8 is a ratio every clip already cuts (veRL's bound).
LOG_RATIO_BOUND = 20.0


@dataclass(frozen=True)
class BatchTotals:
    """The whole batch's normalizers: loss-masked completions N and tokens, and the generation budget."""

    num_sequences: int
    num_tokens: int
    generation_budget: int  # sampler.max_new_tokens: seq_sum_norm's constant

    @classmethod
    def of(cls, mask: torch.Tensor, generation_budget: int) -> "BatchTotals":
        """From the loss mask [B, T] of the whole batch (see `loss_mask`) and sampler.max_new_tokens."""
        lengths = mask.sum(dim=1)
        return cls(
            num_sequences=int((lengths > 0).sum()),
            num_tokens=int(lengths.sum()),
            generation_budget=generation_budget,
        )


# (log pi [B, T], rho [B, T], A [B, 1], config) -> (per-token loss [B, T], {metric name: bool [B, T] of the
# tokens the clip acted on}); the same metric names for every call of one loss.
PolicyLoss = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, AlgorithmConfig], tuple[torch.Tensor, dict[str, torch.Tensor]]
]
POLICY_LOSSES: Registry[PolicyLoss] = Registry("algorithm.policy_loss")

# (masked per-token loss [B, T], loss mask [B, T], totals) -> the batch loss (this micro-batch's share)
LossAggregation = Callable[[torch.Tensor, torch.Tensor, BatchTotals], torch.Tensor]
LOSS_AGGREGATIONS: Registry[LossAggregation] = Registry("algorithm.loss_agg")


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip(logp, ratio, advantages, config):
    """p = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A): PPO's clipped surrogate (Schulman et al. 2017,
    arXiv:1707.06347) as GRPO uses it; eps_high > eps_low is DAPO's clip-higher (Yu et al. 2025,
    arXiv:2503.14476). A clipped token has no gradient: clip/low_frac counts rho < 1 - eps_low with A < 0,
    clip/high_frac rho > 1 + eps_high with A > 0."""
    clipped_ratio = ratio.clamp(1.0 - config.clip_eps_low, 1.0 + config.clip_eps_high)
    loss = -torch.minimum(ratio * advantages, clipped_ratio * advantages)
    return loss, {
        "clip/low_frac": (ratio < 1.0 - config.clip_eps_low) & (advantages < 0),
        "clip/high_frac": (ratio > 1.0 + config.clip_eps_high) & (advantages > 0),
    }


@POLICY_LOSSES.register("dual_clip")
def dual_clip(logp, ratio, advantages, config):
    """p = min(ppo_clip, -c A) where A < 0, else ppo_clip; c = algorithm.dual_clip_c (Ye et al. 2020, "Mastering
    Complex Control in MOBA Games with Deep RL", arXiv:1912.09729; veRL clip_ratio_c, default 3). For A < 0,
    ppo_clip's loss -rho A grows without bound in rho: a token the policy now likes c times more than when
    sampled stops pushing. clip/dual_frac counts rho > c with A < 0 (no gradient)."""
    loss, clipped = ppo_clip(logp, ratio, advantages, config)
    negative = advantages < 0
    loss = torch.where(negative, torch.minimum(loss, -config.dual_clip_c * advantages), loss)
    return loss, clipped | {"clip/dual_frac": (ratio > config.dual_clip_c) & negative}


@POLICY_LOSSES.register("cispo")
def cispo(logp, ratio, advantages, config):
    """p = -sg(min(rho, 1 + eps_high)) A log pi: REINFORCE with a clipped, stop-gradient importance weight
    (CISPO, MiniMax-M1, arXiv:2506.13585; TRL loss_type=cispo caps at epsilon_high = our 1 + clip_eps_high).
    Unlike ppo_clip no token loses its gradient, -w A grad log pi; clip_eps_low is unused (no lower bound, as in
    the paper). clip/high_frac counts tokens whose weight was capped, clip/low_frac is 0."""
    weight = ratio.clamp(max=1.0 + config.clip_eps_high).detach()
    return -weight * advantages * logp, {
        "clip/low_frac": torch.zeros_like(ratio, dtype=torch.bool),
        "clip/high_frac": ratio > 1.0 + config.clip_eps_high,
    }


@LOSS_AGGREGATIONS.register("seq_mean")
def seq_mean(masked, mask, totals):
    """(1/N) sum_i (1/|y_i|) sum_t L_it: each completion weighs the same (GRPO; TRL loss_type=grpo, veRL
    loss_agg_mode=seq-mean-token-mean). A long completion's tokens each weigh less."""
    per_sequence = masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return per_sequence.sum() / max(totals.num_sequences, 1)


@LOSS_AGGREGATIONS.register("token_mean")
def token_mean(masked, mask, totals):
    """(1/sum_i |y_i|) sum_it L_it: each token weighs the same (DAPO; TRL loss_type=dapo, veRL token-mean)."""
    return masked.sum() / max(totals.num_tokens, 1)


@LOSS_AGGREGATIONS.register("seq_sum_norm")
def seq_sum_norm(masked, mask, totals):
    """(1/(N L_max)) sum_it L_it with L_max = sampler.max_new_tokens: a constant, so no completion's weight
    depends on its own or the others' lengths (Dr. GRPO, Liu et al. 2025, arXiv:2503.20783; TRL
    loss_type=dr_grpo divides by max_completion_length, veRL seq-mean-token-sum-norm by the response length)."""
    return masked.sum() / max(totals.num_sequences * totals.generation_budget, 1)


def loss_mask(mask: torch.Tensor, truncated: torch.Tensor | None, config: AlgorithmConfig) -> torch.Tensor:
    """The completion mask [B, T] with, when config.mask_truncated, truncated completions [B] removed."""
    mask = mask.bool()
    if not config.mask_truncated:
        return mask
    if truncated is None:
        raise ValueError("algorithm.mask_truncated needs the truncated flags of the completions")
    return mask & ~truncated.bool()[:, None]


def high_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, top: float) -> torch.Tensor:
    """bool [B, T]: the ceil(top x n) of the n loss tokens (mask [B, T]) with the highest entropy [B, T], ties
    at the threshold kept (Wang et al. 2025, "Beyond the 80/20 Rule", arXiv:2506.01939: top = 0.2; TRL
    top_entropy_quantile)."""
    values = entropy[mask]
    if values.numel() == 0:
        return mask
    threshold = values.topk(math.ceil(top * values.numel())).values.min()
    return mask & (entropy >= threshold)


def clip_cov_mask(
    logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, config: AlgorithmConfig, generator: torch.Generator
) -> torch.Tensor:
    """bool [B, T]: the loss tokens (mask [B, T]) that keep their policy gradient under Clip-Cov (Cui et al. 2025,
    "The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models", arXiv:2505.22617; veRL
    loss_mode=clip_cov).

    The policy's entropy falls by about the covariance of log pi(y_t) and A over the batch's tokens: confident
    tokens with A > 0 (and unlikely ones with A < 0) sharpen the policy. Clip-Cov takes the gradient away from a
    few of the tokens that push hardest:

      Cov_t = (log pi(y_t) - mean log pi) (A_t - mean A)      means over the batch's loss tokens, A_t = A_i
      drawn  max(1, floor(clip_cov_frac x n)) of the n loss tokens, at random among those with
             clip_cov_low < Cov_t < clip_cov_high (all of them when fewer), lose their policy gradient

    logp [B, T]: log-probs of the policy that sampled the batch; advantages [B]; `generator` draws the tokens.
    """
    values = logp[mask]
    token_advantages = advantages[:, None].to(logp.dtype).expand_as(logp)[mask]
    covariance = (values - values.mean()) * (token_advantages - token_advantages.mean())
    candidates = ((covariance > config.clip_cov_low) & (covariance < config.clip_cov_high)).nonzero()[:, 0]
    count = max(1, int(config.clip_cov_frac * values.numel()))
    drawn = candidates[torch.randperm(len(candidates), generator=generator)[:count].to(candidates.device)]
    keep = torch.ones_like(values, dtype=torch.bool)
    keep[drawn] = False
    return mask.clone().masked_scatter_(mask, keep)


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: AlgorithmConfig,
    *,
    totals: BatchTotals,
    truncated: torch.Tensor | None = None,
    sampler_logp: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    pg_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of the module docstring and its metrics.

    logp, old_logp, ref_logp, sampler_logp: [B, T] log-probs of the completion tokens under the policy, the
    policy before this batch's first update (None: on-policy, logp detached), the reference (None when
    kl_coef is 0) and the sampling engine (needed when tis_cap is set). advantages [B], mask [B, T]
    (completion tokens), truncated [B] (needed when mask_truncated). totals: of the whole batch (this may be
    a micro-batch). entropy [B, T]: the policy's entropy, differentiable (needed when entropy_coef > 0).
    pg_mask [B, T]: the tokens that keep their policy loss (`high_entropy_mask`; None: all).

    Metrics are 0-dim tensors, each this batch's share of the whole batch's value: combine micro-batches
    with `merge_metrics`. Fractions and means are over loss tokens; clip/* fractions are the policy loss's
    (see each). clip/logratio_clamped and kl/clamped count loss tokens whose log-ratio or k3 was clamped.
    """
    mask = loss_mask(mask, truncated, config)
    if old_logp is None:
        old_logp = logp.detach()
    if ref_logp is None and config.kl_coef > 0:
        raise ValueError(f"algorithm.kl_coef={config.kl_coef} needs reference log-probs")
    if entropy is None and config.entropy_coef > 0:
        raise ValueError(f"algorithm.entropy_coef={config.entropy_coef} needs the policy's entropy")

    # Padded positions may hold anything; zeroing their differences keeps exp() and gradients finite there.
    log_ratio = (logp - old_logp).masked_fill(~mask, 0.0)
    lengths = mask.sum(dim=1)
    if config.importance_level == "sequence":
        sequence_log_ratio = log_ratio.sum(dim=1) / lengths.clamp(min=1)
        log_ratio = sequence_log_ratio[:, None].expand_as(logp)
    logratio_clamped = log_ratio.detach().abs() > LOG_RATIO_BOUND
    ratio = torch.exp(log_ratio.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND))
    adv = advantages[:, None].to(ratio.dtype)
    per_token, clipped = POLICY_LOSSES[config.policy_loss](logp, ratio, adv, config)
    if pg_mask is not None:
        per_token = per_token * pg_mask

    metrics: dict[str, torch.Tensor] = {}
    if config.tis_cap is not None:
        if sampler_logp is None:
            raise ValueError("algorithm.tis_cap needs the sampler's log-probs")
        tis_log_weight = (old_logp - sampler_logp).detach().masked_fill(~mask, 0.0)
        tis_weight = torch.exp(tis_log_weight).clamp(max=config.tis_cap)
        per_token = per_token * tis_weight
        metrics["tis/weight_mean"] = _token_share(tis_weight, mask, totals)

    if ref_logp is not None:
        kl, kl_clamped = kl_estimate(logp.masked_fill(~mask, 0.0), ref_logp.masked_fill(~mask, 0.0), config.kl_estimator)
        if config.kl_coef > 0:
            per_token = per_token + config.kl_coef * kl
        metrics["kl/mean"] = _token_share(kl.detach(), mask, totals)
        metrics["kl/clamped"] = (kl_clamped & mask).sum().to(logp.dtype)
    if config.entropy_coef > 0:
        per_token = per_token - config.entropy_coef * entropy

    loss = LOSS_AGGREGATIONS[config.loss_agg](per_token.masked_fill(~mask, 0.0), mask, totals)
    with torch.no_grad():
        metrics |= {name: _token_share(tokens.to(ratio.dtype), mask, totals) for name, tokens in clipped.items()}
        metrics |= {
            "loss": loss.detach(),
            "clip/logratio_clamped": (logratio_clamped & mask).sum().to(ratio.dtype),
            "ratio/mean": _token_share(ratio, mask, totals),
            "ratio/min": ratio.masked_fill(~mask, float("inf")).amin(),
            "ratio/max": ratio.masked_fill(~mask, float("-inf")).amax(),
        }
    return loss, metrics


def merge_metrics(parts: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Combine the metrics of a batch's micro-batches: min/max of the extremes, sums of the shares and counts."""
    merged = {}
    for key in parts[0]:
        values = torch.stack([part[key] for part in parts])
        if key == "ratio/min":
            merged[key] = values.min().item()
        elif key in ("ratio/max", "logprob_mismatch/max"):
            merged[key] = values.max().item()
        else:
            merged[key] = values.sum().item()
    return merged


def _token_share(values: torch.Tensor, mask: torch.Tensor, totals: BatchTotals) -> torch.Tensor:
    return values.masked_fill(~mask, 0.0).sum() / max(totals.num_tokens, 1)
