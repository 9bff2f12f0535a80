"""Per-token estimators of KL(pi || pi_ref) from tokens sampled from pi (Schulman 2020, "Approximating KL
Divergence", http://joschu.net/blog/kl-approx.html), registered under their `algorithm.kl_estimator` names.

Each maps d = log pi_ref(y_t) - log pi(y_t) [B, T] to (the estimate, a bool [B, T] of tokens a guard clamped).
"""

from __future__ import annotations

from typing import Callable

import torch

from grpo_cli.algo.registry import Registry

KlEstimator = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
KL_ESTIMATORS: Registry[KlEstimator] = Registry("algorithm.kl_estimator")

# k3's guards, as veRL's low_var_kl: d within +-20 before exp(), the estimate within +-10. One token whose
# reference probability is far from the policy's then adds a bounded, gradient-free penalty instead of inf.
K3_LOG_RATIO_BOUND = 20.0
K3_BOUND = 10.0


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise KL estimate [B, T] from policy and reference log-probs of the sampled tokens, and the bool
    [B, T] of tokens whose estimate was clamped."""
    return KL_ESTIMATORS[estimator](ref_logp - logp)


@KL_ESTIMATORS.register("k1")
def k1(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """k1 = -d = log pi - log pi_ref: unbiased, high variance, can be negative (veRL kl_loss_type=kl)."""
    return -d, torch.zeros_like(d, dtype=torch.bool)


@KL_ESTIMATORS.register("k2")
def k2(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """k2 = d^2 / 2: biased, low variance, >= 0 (veRL kl_loss_type=mse)."""
    return 0.5 * d**2, torch.zeros_like(d, dtype=torch.bool)


@KL_ESTIMATORS.register("k3")
def k3(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """k3 = exp(d) - d - 1: unbiased, low variance, >= 0 (GRPO's choice; veRL kl_loss_type=low_var_kl, TRL's
    only estimator), with d clamped to +-20 and k3 to at most 10 (no gradient where a clamp acts)."""
    bounded_d = d.clamp(-K3_LOG_RATIO_BOUND, K3_LOG_RATIO_BOUND)
    unbounded = torch.exp(bounded_d) - bounded_d - 1.0
    estimate = unbounded.clamp(max=K3_BOUND)
    return estimate, unbounded > K3_BOUND  # |d| > 20 gives k3 > 19: counted here too
