"""Advantage estimators and group statistics, on hand-computed values and the gradients they produce."""

import dataclasses
import itertools
import math
import random
import statistics

import pytest
import torch

from conftest import TINY_RUN
from grpo_cli.algo.advantages import ADVANTAGE_ESTIMATORS, compute_advantages, pass_k_at
from grpo_cli.algo.loss import BatchTotals, policy_loss
from grpo_cli.algo.stats import group_stats, zero_variance_groups
from grpo_cli.compose import compose
from grpo_cli.config import AlgorithmConfig
from grpo_cli.errors import ConfigError

EPS = 1e-4


def advantages_of(values, group_size, **algorithm):
    config = AlgorithmConfig(group_size=group_size, **{"std_eps": EPS} | algorithm)
    return compute_advantages(torch.tensor(values, dtype=torch.float64), config, step=1)


def test_group_scaling_by_hand():
    # mean 0.25, unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5
    advantages = advantages_of([1.0, 0.0, 0.0, 0.0], 4)
    torch.testing.assert_close(advantages, torch.tensor([0.75, -0.25, -0.25, -0.25], dtype=torch.float64) / (0.5 + EPS))


def test_each_group_is_normalized_separately():
    advantages = advantages_of([1.0, 0.0, 0.0, 0.0, 3.0, 1.0, 1.0, 1.0], 4)
    # the second group is the first shifted and scaled by 2: (r - mean) / std is the same up to eps
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25], dtype=torch.float64) / (0.5 + EPS / 2)
    torch.testing.assert_close(advantages[4:], expected)


def test_batch_scaling_uses_the_std_of_all_rewards():
    values = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    advantages = advantages_of(values, 4, scale_rewards="batch")
    std = statistics.stdev(values)
    expected = [(r - 0.25) / (std + EPS) for r in values[:4]] + [(r - 0.5) / (std + EPS) for r in values[4:]]
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float64))


def test_no_scaling_only_subtracts_the_group_mean():
    advantages = advantages_of([2.0, 0.0, 1.0, 1.0, 0.0, 5.0], 3, scale_rewards="none")
    torch.testing.assert_close(advantages, torch.tensor([1.0, -1.0, 0.0, -1.0, -2.0, 3.0], dtype=torch.float64))


def test_rloo_subtracts_the_mean_of_the_other_completions():
    # r_i - mean of the other three: 1 - 0, 0 - 1/3; 2 - 2/3, 0 - 4/3, 1 - 1, 1 - 1
    advantages = advantages_of([1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 1.0, 1.0], 4, advantage="rloo")
    expected = [1.0, -1 / 3, -1 / 3, -1 / 3, 4 / 3, -4 / 3, 0.0, 0.0]
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float64))


def test_reinforce_pp_normalizes_group_centered_rewards_over_the_batch():
    # centered: 0.75, -0.25 x 3 | 1, -1, 0, 0; their mean is 0, their unbiased std sqrt(2.75 / 7)
    advantages = advantages_of([1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 1.0, 1.0], 4, advantage="reinforce_pp")
    centered = [0.75, -0.25, -0.25, -0.25, 1.0, -1.0, 0.0, 0.0]
    expected = [c / (math.sqrt(2.75 / 7) + EPS) for c in centered]
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize(
    "advantage,pass_k,expected",
    [
        # group stds 0.5 and sqrt(4/3) (unbiased)
        ("grpo", 1, [0.75 / (0.5 + EPS), -0.25 / (0.5 + EPS), 1 / (math.sqrt(4 / 3) + EPS), -1 / (math.sqrt(4 / 3) + EPS)]),
        # 1 - 0, 0 - 1/3; 1 - (-1/3), -1 - 1/3
        ("rloo", 1, [1.0, -1 / 3, 4 / 3, -4 / 3]),
        # centered 0.75, -0.25 x 3, 1, -1, 1, -1: mean 0, sum of squares 4.75
        ("reinforce_pp", 1, [c / (math.sqrt(4.75 / 7) + EPS) for c in (0.75, -0.25, 1.0, -1.0)]),
        # pass@2. [1, 0, 0, 0]: R = 1/2, sigma = 1/2, correct 1/2 / sigma, wrong (1/2 - 2/3) / sigma.
        # [1, -1, 1, -1]: one pair in 6 scores -1, the rest 1: R = 2/3, sigma = sqrt(5)/3; a 1 is only in pairs
        # scoring 1, a -1 in pairs scoring 1, 1, -1 (mean 1/3)
        ("passk", 2, [0.5 / (0.5 + EPS), (0.5 - 2 / 3) / (0.5 + EPS), (1 / 3) / (math.sqrt(5) / 3 + EPS), (-1 / 3) / (math.sqrt(5) / 3 + EPS)]),
        # pass@2: correct 2 C(3,1)/C(3,1) = 2, wrong 0; [1, -1, 1, -1] is twice 1/0 rewards with c = 2: 2 x 4/3
        ("pkpo", 2, [2.0, 0.0, 8 / 3, 0.0]),
    ],
)
def test_each_estimator_gives_the_hand_computed_reinforce_gradient(advantage, pass_k, expected):
    # groups [1, 0, 0, 0] and [1, -1, 1, -1] (G = 4); completions 0, 1, 4, 5 (lengths 2, 1, 3, 2) are checked.
    # On-policy ppo_clip with seq_mean: d loss / d logp_it = -A_i / (N |y_i|), N = 8.
    rewards = [1.0, 0.0, 0.0, 0.0, 1.0, -1.0, 1.0, -1.0]
    config = AlgorithmConfig(group_size=4, std_eps=EPS, advantage=advantage, pass_k=pass_k)
    advantages = compute_advantages(torch.tensor(rewards, dtype=torch.float64), config, step=1)
    lengths = torch.tensor([2, 1, 1, 1, 3, 2, 1, 1])
    mask = torch.arange(3)[None, :] < lengths[:, None]
    logp = torch.full((8, 3), -1.0, dtype=torch.float64, requires_grad=True)
    loss, _ = policy_loss(logp, None, None, advantages, mask, config, totals=BatchTotals.of(mask, 3))
    loss.backward()
    checked = [0, 1, 4, 5]
    torch.testing.assert_close(advantages[checked], torch.tensor(expected, dtype=torch.float64))
    for i, a in zip(checked, expected):
        n = int(lengths[i])
        torch.testing.assert_close(logp.grad[i, :n], torch.full((n,), -a / (8 * n), dtype=torch.float64))


@pytest.mark.parametrize(
    "advantage,scale_rewards",
    [("grpo", "batch"), ("grpo", "none")] + [(name, "group") for name in ADVANTAGE_ESTIMATORS.names()],
)
def test_zero_variance_groups_have_exactly_zero_advantage(advantage, scale_rewards):
    # 0.1 + 0.1 + 0.1 rounds, so an unguarded (r - mean) would be ~1e-17, not 0
    values = [0.1, 0.1, 0.1, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    advantages = advantages_of(values, 3, advantage=advantage, scale_rewards=scale_rewards)
    assert torch.all(advantages[:3] == 0) and torch.all(advantages[6:] == 0)
    assert advantages[3] > 0 and advantages[4] < 0


def test_all_zero_variance_batch_gives_zero_policy_gradient_and_says_so():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    config = AlgorithmConfig(group_size=4, kl_coef=0.0)
    advantages = compute_advantages(rewards, config, step=1)
    assert torch.all(advantages == 0)

    stats = group_stats(rewards, 4)
    assert stats.zero_variance_frac == 1.0
    assert stats.any_positive_frac == 0.5

    gen = torch.Generator().manual_seed(0)
    logp = (-torch.rand(8, 5, generator=gen)).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(8, 5, generator=gen)  # off-policy: ratios far from 1
    mask = torch.ones(8, 5, dtype=torch.bool)
    totals = BatchTotals.of(mask, 5)
    loss, metrics = policy_loss(logp, old, None, advantages, mask, config, totals=totals)
    loss.backward()
    assert loss.item() == 0 and torch.all(logp.grad == 0)
    assert metrics["clip/low_frac"].item() == 0 and metrics["clip/high_frac"].item() == 0

    # with a KL penalty only the KL gradient is left: d/dlogp of k3 = 1 - exp(ref - logp), over 40 tokens
    ref = logp.detach() - 0.5
    logp.grad = None
    loss, metrics = policy_loss(logp, old, ref, advantages, mask, AlgorithmConfig(group_size=4, kl_coef=0.1), totals=totals)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.full((8, 5), 0.1 * (1 - torch.exp(torch.tensor(-0.5)).item()) / 5 / 8))
    assert metrics["kl/mean"].item() == pytest.approx(torch.exp(torch.tensor(-0.5)).item() + 0.5 - 1, rel=1e-6)


def test_group_stats_by_hand():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    stats = group_stats(rewards, 4)
    assert stats.zero_variance_frac == pytest.approx(2 / 3)
    assert stats.any_positive_frac == pytest.approx(2 / 3)
    assert zero_variance_groups(rewards, 4).tolist() == [True, False, True]


# --- pass@k estimators: passk (Chen et al. 2025) and pkpo (Walder & Karkhanis 2025) ---------------------------


@pytest.mark.parametrize(
    "rewards,k,expected",
    [
        # c = 1 of 4, k = 2: R = 1 - C(3,2)/C(4,2) = 1/2, sigma = 1/2; correct (1 - R)/sigma = 1,
        # wrong (1 - R - C(2,1)/C(3,1))/sigma = (1/2 - 2/3) * 2 = -1/3
        ([0.0, 1.0, 0.0, 0.0], 2, [-1 / 3, 1.0, -1 / 3, -1 / 3]),
        # c = 2: R = 5/6, sigma = sqrt(5)/6; correct (1/6) / sigma, wrong (1/6 - C(1,1)/C(3,1)) / sigma
        ([1.0, 0.0, 1.0, 0.0], 2, [1 / math.sqrt(5), -1 / math.sqrt(5), 1 / math.sqrt(5), -1 / math.sqrt(5)]),
        # c = 3: one wrong completion cannot fill a 2-subset, every subset passes: R = 1, sigma = 0
        ([1.0, 1.0, 0.0, 1.0], 2, [0.0, 0.0, 0.0, 0.0]),
        # c = 1 of 4, k = 3: R = 1 - C(3,3)/C(4,3) = 3/4, sigma = sqrt(3)/4; correct (1/4)/sigma,
        # wrong (1/4 - C(2,2)/C(3,2))/sigma = (1/4 - 1/3)/sigma
        ([0.0, 0.0, 0.0, 1.0], 3, [-1 / (3 * math.sqrt(3))] * 3 + [1 / math.sqrt(3)]),
        # graded rewards 2, 0, 1, k = 2: subsets {2,0} {2,1} {0,1} score 2, 2, 1: R = 5/3, sigma = sqrt(2)/3.
        # 2 is in subsets scoring 2, 2 (mean 2); 0 and 1 each in one scoring 2 and one scoring 1 (mean 3/2):
        # the two weaker completions tie although their rewards differ
        ([2.0, 0.0, 1.0], 2, [1 / math.sqrt(2), -1 / (2 * math.sqrt(2)), -1 / (2 * math.sqrt(2))]),
    ],
)
def test_passk_by_hand(rewards, k, expected):
    advantages = passk_advantages(rewards, k)
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize(
    "rewards,k,expected",
    [
        # 1/0 rewards: a correct completion gets k C(G-c, k-1) / C(G-1, k-1), a wrong one 0.
        ([0.0, 1.0, 0.0, 0.0], 2, [0.0, 2.0, 0.0, 0.0]),  # 2 C(3,1)/C(3,1)
        ([1.0, 0.0, 1.0, 0.0], 2, [4 / 3, 0.0, 4 / 3, 0.0]),  # 2 C(2,1)/C(3,1)
        ([1.0, 1.0, 0.0, 1.0], 2, [2 / 3, 2 / 3, 0.0, 2 / 3]),  # 2 C(1,1)/C(3,1)
        ([1.0, 1.0, 0.0, 1.0], 3, [0.0, 0.0, 0.0, 0.0]),  # 3 C(1,2)/C(3,2): the prompt counts as solved
        ([1.0, 0.0, 0.0, 1.0], 3, [1.0, 0.0, 0.0, 1.0]),  # 3 C(2,2)/C(3,2)
        # graded rewards 2, 0, 1, k = 2, G s_i = G/C(3,2) x sum over the pairs holding i of (max - the other):
        # 2: (2 - 0) + (2 - 1) = 3; 0: (2 - 2) + (1 - 1) = 0; 1: (1 - 0) + (2 - 2) = 1
        ([2.0, 0.0, 1.0], 2, [3.0, 0.0, 1.0]),
        # negative rewards: only differences count, so shifting every reward by -1 changes nothing
        ([1.0, -1.0, 0.0], 2, [3.0, 0.0, 1.0]),
    ],
)
def test_pkpo_by_hand(rewards, k, expected):
    advantages = advantages_of(rewards, len(rewards), advantage="pkpo", pass_k=k)
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float64))


def passk_advantages(rewards, k, group_size=None):
    """passk's advantages with a negligible eps: the paper's division by sigma."""
    return advantages_of(rewards, group_size or len(rewards), advantage="passk", pass_k=k, std_eps=1e-12)


def subset_best(rewards, k):
    """{k-subset (indices): its best reward}, every subset enumerated."""
    return {subset: max(rewards[j] for j in subset) for subset in itertools.combinations(range(len(rewards)), k)}


@pytest.mark.parametrize("G", [2, 3, 5, 7])
def test_both_estimators_match_the_enumeration_of_every_k_subset(G):
    # adversarial rewards: ties, negatives, graded values, several groups in one batch
    rng = random.Random(G)
    groups = [[rng.choice([-1.0, 0.0, 0.25, 0.5, 1.0, 2.0]) for _ in range(G)] for _ in range(6)]
    for k in range(1, G + 1):
        got_passk = passk_advantages([r for group in groups for r in group], k, G).view(-1, G)
        got_pkpo = advantages_of([r for group in groups for r in group], G, advantage="pkpo", pass_k=k).view(-1, G)
        for rewards, passk_row, pkpo_row in zip(groups, got_passk.tolist(), got_pkpo.tolist()):
            best = subset_best(rewards, k)
            R = statistics.fmean(best.values())
            sigma = statistics.pstdev(best.values())
            for i in range(G):
                holding = [score for subset, score in best.items() if i in subset]
                expected = 0.0 if sigma == 0 else (statistics.fmean(holding) - R) / (sigma + 1e-12)
                assert passk_row[i] == pytest.approx(expected, abs=1e-9), (rewards, k, i)
                if k > 1:
                    gains = [score - max(rewards[j] for j in subset if j != i) for subset, score in best.items() if i in subset]
                    assert pkpo_row[i] == pytest.approx(G * sum(gains) / len(best), abs=1e-9), (rewards, k, i)


def test_at_k_1_passk_is_grpo_with_the_population_std_and_pkpo_is_rloo():
    values = [1.0, 0.0, 0.0, 0.0, 0.5, 2.0, 0.0, 1.0, 3.0, 3.0, 3.0, 3.0]
    groups = torch.tensor(values, dtype=torch.float64).view(-1, 4)
    population_std = groups.std(dim=1, correction=0, keepdim=True)
    # passk: (r - mean_g) / (std_g + eps) with std_g without Bessel's correction; the tied group gets 0
    expected = ((groups - groups.mean(dim=1, keepdim=True)) / (population_std + EPS)).nan_to_num().view(-1)
    expected[8:] = 0.0
    torch.testing.assert_close(advantages_of(values, 4, advantage="passk", pass_k=1), expected)
    # which is grpo's advantage rescaled by its (corrected) std over the population std
    bessel_std = groups.std(dim=1, keepdim=True)
    rescaled = (advantages_of(values, 4).view(-1, 4) * (bessel_std + EPS) / (population_std + EPS)).view(-1)
    torch.testing.assert_close(advantages_of(values, 4, advantage="passk", pass_k=1), rescaled.nan_to_num())
    assert torch.equal(advantages_of(values, 4, advantage="pkpo", pass_k=1), advantages_of(values, 4, advantage="rloo"))


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_the_expected_policy_gradient_is_the_gradient_of_pass_at_k(k):
    """A Bernoulli policy, p = sigmoid(theta) correct: grad_theta log pi = 1 - p (correct) or -p (wrong). The
    expectation over every outcome of G = 6 samples (c correct with probability C(G,c) p^c (1-p)^(G-c)) of
    sum_i A_i grad log pi(y_i) is, against autograd's gradient of pass@k = 1 - (1-p)^k:
      pkpo: G x grad pass@k (unbiased: the baseline does not depend on y_i)
      passk x sigma (the paper's advantage before its std division): (G - k)/k x grad pass@k, k = 1 included
    """
    G = 6
    theta = torch.tensor(-0.4, dtype=torch.float64, requires_grad=True)
    p = torch.sigmoid(theta)
    (1 - (1 - p) ** k).backward()
    p = p.item()
    expected_pkpo = expected_passk = 0.0
    for c in range(G + 1):
        rewards = [1.0] * c + [0.0] * (G - c)
        probability = math.comb(G, c) * p**c * (1 - p) ** (G - c)
        scores = [1 - p] * c + [-p] * (G - c)
        pkpo_advantages = advantages_of(rewards, G, advantage="pkpo", pass_k=k).tolist()
        R = 1 - math.comb(G - c, k) / math.comb(G, k)
        sigma = math.sqrt(R * (1 - R))
        passk_advantages_ = [a * sigma for a in passk_advantages(rewards, k).tolist()]
        expected_pkpo += probability * sum(a * s for a, s in zip(pkpo_advantages, scores))
        expected_passk += probability * sum(a * s for a, s in zip(passk_advantages_, scores))
    assert expected_pkpo == pytest.approx(G * theta.grad.item(), rel=1e-9)
    assert expected_passk == pytest.approx((G - k) / k * theta.grad.item(), rel=1e-9)


def test_pass_k_anneals_to_1_after_pass_k_anneal_steps():
    config = AlgorithmConfig(group_size=4, advantage="pkpo", pass_k=3, pass_k_anneal_steps=50)
    assert [pass_k_at(config, step) for step in (1, 50, 51, 80)] == [3, 3, 1, 1]
    assert pass_k_at(dataclasses.replace(config, pass_k_anneal_steps=0), 1000) == 3
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    # step 50: pass@3, 3 C(2,2)/C(3,2) = 1 for each correct; step 51: rloo, 1 - 1/3 and 0 - 2/3
    torch.testing.assert_close(compute_advantages(rewards, config, step=50), torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(compute_advantages(rewards, config, step=51), torch.tensor([2 / 3, -2 / 3, 2 / 3, -2 / 3], dtype=torch.float64))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["algorithm.advantage=passk", "algorithm.pass_k=9"], "algorithm.pass_k=9: pass@k is estimated from the group's k-subsets, so k must be at most algorithm.group_size=8"),
        (["algorithm.advantage=pkpo", "algorithm.pass_k=0"], "algorithm.pass_k=0: must be >= 1"),
        (["algorithm.pass_k=4"], "apply to algorithm.advantage=passk or pkpo only, not grpo"),
        (["algorithm=rloo", "algorithm.pass_k_anneal_steps=10"], "apply to algorithm.advantage=passk or pkpo only, not rloo"),
    ],
)
def test_pass_k_is_checked_against_the_group_and_the_estimator(overrides, message):
    with pytest.raises(ConfigError) as error:
        compose([*TINY_RUN, "algorithm.group_size=8", *overrides])
    assert message in str(error.value) and "\n" not in str(error.value)
