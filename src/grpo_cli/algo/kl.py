"""Per-token estimators of KL(pi || pi_ref) from tokens sampled from pi (Schulman, "Approximating KL").

With d = log pi_ref(y_t) - log pi(y_t):
  k1 = -d                   unbiased, high variance, can be negative
  k2 = d^2 / 2              biased, low variance, >= 0
  k3 = exp(d) - d - 1       unbiased, low variance, >= 0 (GRPO's choice)
"""

from __future__ import annotations

from typing import Literal

import torch

KlEstimator = Literal["k1", "k2", "k3"]


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: KlEstimator) -> torch.Tensor:
    """Elementwise KL estimate from policy and reference log-probs of the sampled tokens (same shape)."""
    d = ref_logp - logp
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d**2
    return torch.exp(d) - d - 1.0
