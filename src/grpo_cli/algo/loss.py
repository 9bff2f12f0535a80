"""The GRPO policy loss: a clipped policy-gradient surrogate plus a KL penalty toward a frozen reference.

For completion i (token t, loss mask m_it), advantage A_i, policy pi, the policy that sampled the batch
pi_old, the reference pi_ref, and the log-ratio l_it = log pi(y_it) - log pi_old(y_it):

  importance ratio   rho_it = exp(l_it)                                       importance_level = token
                     rho_it = rho_i = exp(sum_t m_it l_it / |y_i|)            importance_level = sequence (GSPO)
  surrogate          s_it = min(rho_it A_i, clip(rho_it, 1 - eps_low, 1 + eps_high) A_i)
  TIS correction     w_it = min(pi_old(y_it) / pi_sampler(y_it), tis_cap)     (w = 1 when tis_cap is null)
  per-token loss     L_it = -w_it s_it + beta KL_it                           (KL_it: see kl.py, beta = kl_coef)

and the batch loss aggregates L_it over the tokens the loss sees (loss_agg):

  seq_mean       (1/N) sum_i (1/|y_i|) sum_t m_it L_it      mean per completion, then over completions (GRPO)
  token_mean     (1/sum_it m_it) sum_it m_it L_it           every token weighs the same (DAPO)
  seq_sum_norm   (1/(N T_max)) sum_it m_it L_it             a length-independent constant (Dr. GRPO)

N counts completions with at least one loss token and T_max is the longest such completion. With
mask_truncated, completions cut at the length limit get m_it = 0 everywhere (DAPO overlong filtering).

On-policy (pi_old = pi detached, w = 1) rho = 1 and grad L_it = -A_i grad log pi(y_it) + beta grad KL_it: the
group-baseline REINFORCE gradient. w_it corrects for the sampling engine's numerics differing from the
learner's (Yao et al. 2025, truncated importance sampling); it is a constant, not differentiated.

A batch may be processed in micro-batches: each passes `BatchTotals` of the whole batch, so its loss is its
exact share of the batch loss, and summing micro-batch losses (and gradients) gives the loss in one go.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grpo_cli.algo.kl import kl_estimate
from grpo_cli.config import AlgorithmConfig


@dataclass(frozen=True)
class BatchTotals:
    """The whole batch's normalizers: loss-masked completions N, tokens, and the longest such completion."""

    num_sequences: int
    num_tokens: int
    max_length: int

    @classmethod
    def of(cls, mask: torch.Tensor) -> "BatchTotals":
        """From the loss mask [B, T] of the whole batch (see `loss_mask`)."""
        lengths = mask.sum(dim=1)
        return cls(
            num_sequences=int((lengths > 0).sum()),
            num_tokens=int(lengths.sum()),
            max_length=int(lengths.max()) if lengths.numel() else 0,
        )


def loss_mask(mask: torch.Tensor, truncated: torch.Tensor | None, config: AlgorithmConfig) -> torch.Tensor:
    """The completion mask [B, T] with, when config.mask_truncated, truncated completions [B] removed."""
    mask = mask.bool()
    if not config.mask_truncated:
        return mask
    if truncated is None:
        raise ValueError("algorithm.mask_truncated needs the truncated flags of the completions")
    return mask & ~truncated.bool()[:, None]


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: AlgorithmConfig,
    *,
    truncated: torch.Tensor | None = None,
    sampler_logp: torch.Tensor | None = None,
    totals: BatchTotals | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of the module docstring and its metrics.

    logp, old_logp, ref_logp, sampler_logp: [B, T] log-probs of the completion tokens under the policy, the
    policy before this batch's first update (None: on-policy, logp detached), the reference (None when
    kl_coef is 0) and the sampling engine (needed when tis_cap is set). advantages [B], mask [B, T]
    (completion tokens), truncated [B] (needed when mask_truncated). totals: of the whole batch when this is
    a micro-batch, else computed here.

    Metrics are 0-dim tensors, each this batch's share of the whole batch's value: combine micro-batches
    with `merge_metrics`. Fractions and means are over loss tokens; clip/low_frac and clip/high_frac count tokens
    whose gradient the clip removed (ratio below 1 - eps_low with A < 0, above 1 + eps_high with A > 0).
    """
    mask = loss_mask(mask, truncated, config)
    totals = totals or BatchTotals.of(mask)
    if old_logp is None:
        old_logp = logp.detach()
    if ref_logp is None and config.kl_coef > 0:
        raise ValueError(f"algorithm.kl_coef={config.kl_coef} needs reference log-probs")

    # Padded positions may hold anything; zeroing their differences keeps exp() and gradients finite there.
    log_ratio = (logp - old_logp).masked_fill(~mask, 0.0)
    lengths = mask.sum(dim=1)
    if config.importance_level == "sequence":
        sequence_log_ratio = log_ratio.sum(dim=1) / lengths.clamp(min=1)
        log_ratio = sequence_log_ratio[:, None].expand_as(logp)
    ratio = torch.exp(log_ratio)
    adv = advantages[:, None].to(ratio.dtype)
    clipped_ratio = ratio.clamp(1.0 - config.clip_eps_low, 1.0 + config.clip_eps_high)
    per_token = -torch.minimum(ratio * adv, clipped_ratio * adv)

    metrics: dict[str, torch.Tensor] = {}
    if config.tis_cap is not None:
        if sampler_logp is None:
            raise ValueError("algorithm.tis_cap needs the sampler's log-probs")
        tis_log_weight = (old_logp - sampler_logp).detach().masked_fill(~mask, 0.0)
        tis_weight = torch.exp(tis_log_weight).clamp(max=config.tis_cap)
        per_token = per_token * tis_weight
        metrics["tis/weight_mean"] = _token_share(tis_weight, mask, totals)

    if ref_logp is not None:
        kl = kl_estimate(logp.masked_fill(~mask, 0.0), ref_logp.masked_fill(~mask, 0.0), config.kl_estimator)
        if config.kl_coef > 0:
            per_token = per_token + config.kl_coef * kl
        metrics["kl/mean"] = _token_share(kl.detach(), mask, totals)

    loss = aggregate(per_token, mask, config.loss_agg, totals)
    with torch.no_grad():
        clipped_low = (ratio < 1.0 - config.clip_eps_low) & (adv < 0)
        clipped_high = (ratio > 1.0 + config.clip_eps_high) & (adv > 0)
        metrics |= {
            "loss": loss.detach(),
            "clip/low_frac": _token_share(clipped_low.float(), mask, totals),
            "clip/high_frac": _token_share(clipped_high.float(), mask, totals),
            "ratio/mean": _token_share(ratio, mask, totals),
            "ratio/min": ratio.masked_fill(~mask, float("inf")).amin(),
            "ratio/max": ratio.masked_fill(~mask, float("-inf")).amax(),
        }
    return loss, metrics


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, loss_agg: str, totals: BatchTotals) -> torch.Tensor:
    """Reduce the per-token loss [B, T] over loss tokens, as `loss_agg` says (module docstring)."""
    masked = per_token.masked_fill(~mask, 0.0)
    if loss_agg == "seq_mean":
        per_sequence = masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return per_sequence.sum() / max(totals.num_sequences, 1)
    if loss_agg == "token_mean":
        return masked.sum() / max(totals.num_tokens, 1)
    return masked.sum() / max(totals.num_sequences * totals.max_length, 1)


def merge_metrics(parts: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Combine the metrics of a batch's micro-batches: min/max of the extremes, sums of the shares."""
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
