"""The unbiased pass@k estimator (Chen et al. 2021, "Evaluating Large Language Models Trained on Code")."""

from __future__ import annotations

from typing import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k completions drawn without replacement from n is correct), c of n being correct.

    pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i)

    The product form never forms a binomial coefficient, so it stays accurate for n in the thousands,
    where C(n, k) overflows a float.

    Args:
        n: samples of the prompt; c: how many of them are correct; k: the k of pass@k, 1 <= k <= n.
    Returns:
        pass@k of the prompt, in [0, 1].
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n = {n} samples per prompt")
    if n - c < k:
        return 1.0
    fail = 1.0
    for i in range(n - c + 1, n + 1):
        fail *= 1.0 - k / i
    return 1.0 - fail


def mean_pass_at_k(num_correct: Sequence[int], n: int, k: int) -> float:
    """pass@k averaged over prompts.

    Args:
        num_correct: per prompt, how many of its n samples are correct.
        n: samples per prompt; k: the k of pass@k.
    Returns:
        The mean of pass_at_k(n, c, k) over prompts.
    """
    return sum(pass_at_k(n, c, k) for c in num_correct) / len(num_correct)
