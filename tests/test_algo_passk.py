"""The unbiased pass@k estimator against brute-force enumeration and exact rational arithmetic."""

import itertools
import math
from fractions import Fraction

import pytest

from grpo_cli.algo.passk import mean_pass_at_k, pass_at_k


def brute_force(n: int, c: int, k: int) -> float:
    """The fraction of k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(min(subset) < c for subset in subsets) / len(subsets)


def test_matches_enumeration_of_all_subsets_up_to_n_12():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12), (n, c, k)


@pytest.mark.parametrize("c", [0, 1, 10, 500, 990, 1000])
@pytest.mark.parametrize("k", [1, 10, 100, 500, 1000])
def test_stable_at_n_1000(c, k):
    n = 1000
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12)


def test_pass_at_1_is_the_fraction_correct():
    assert pass_at_k(12, 3, 1) == pytest.approx(0.25)
    assert mean_pass_at_k([3, 0, 12], n=12, k=1) == pytest.approx((0.25 + 0 + 1) / 3)


def test_k_above_n_is_an_error():
    with pytest.raises(ValueError, match=r"pass@13 needs 1 <= k <= n = 12"):
        pass_at_k(12, 3, 13)
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(12, 13, 1)
