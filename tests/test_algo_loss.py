"""The GRPO policy loss against an independent per-token loop, by hand, and against REINFORCE; the Dr. GRPO
constant and the numerical guards."""

import itertools
import math

import pytest
import torch

from grpo_cli.algo.loss import BatchTotals, loss_mask, merge_metrics, policy_loss
from grpo_cli.config import AlgorithmConfig

# Two groups of 3 completions with lengths 4, 2, 3, 1, 4, 3 padded to T = 4; completion 4 was truncated.
LENGTHS = [4, 2, 3, 1, 4, 3]
TRUNCATED = [False, False, False, False, True, False]
ADVANTAGES = [1.2, -0.4, -0.8, 0.0, 1.1, -1.1]
PAD = 1e3  # padded positions hold garbage: exp(1e3) overflows, so any leak shows up as inf/nan
BUDGET = 6  # sampler.max_new_tokens: seq_sum_norm's constant, above the longest completion here


def totals_of(mask, config, truncated=None) -> BatchTotals:
    return BatchTotals.of(loss_mask(mask, truncated, config), BUDGET)


def make_inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    B, T = len(LENGTHS), max(LENGTHS)
    mask = torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None]
    old = -torch.rand(B, T, generator=gen, dtype=torch.float64) * 3
    # log-ratios in [-0.6, 0.6]: ratios from 0.55 to 1.8, on both sides of every clip range used here
    logp = old + (torch.rand(B, T, generator=gen, dtype=torch.float64) - 0.5) * 1.2
    ref = logp + (torch.rand(B, T, generator=gen, dtype=torch.float64) - 0.5)
    sampler = old + (torch.rand(B, T, generator=gen, dtype=torch.float64) - 0.5) * 0.8
    logp, old, ref, sampler = (x.masked_fill(~mask, PAD) for x in (logp, old, ref, sampler))
    return {
        "logp": logp,
        "old": old.masked_fill(~mask, -PAD),
        "ref": ref,
        "sampler": sampler,
        "advantages": torch.tensor(ADVANTAGES, dtype=torch.float64),
        "mask": mask,
        "truncated": torch.tensor(TRUNCATED),
    }


def loop_loss_and_grad(inputs, config: AlgorithmConfig):
    """The loss and d loss / d logp written out token by token with Python floats."""
    logp, old, ref, sampler = (inputs[k].tolist() for k in ("logp", "old", "ref", "sampler"))
    adv, mask, truncated = inputs["advantages"].tolist(), inputs["mask"].tolist(), inputs["truncated"].tolist()
    B, T = len(logp), len(logp[0])
    tokens = [[t for t in range(T) if mask[i][t] and not (config.mask_truncated and truncated[i])] for i in range(B)]
    lengths = [len(ts) for ts in tokens]
    num_seqs, num_tokens = sum(n > 0 for n in lengths), sum(lengths)
    loss, grad = 0.0, [[0.0] * T for _ in range(B)]
    for i in range(B):
        if not tokens[i]:
            continue
        weight = {
            "seq_mean": 1 / (num_seqs * lengths[i]),
            "token_mean": 1 / num_tokens,
            "seq_sum_norm": 1 / (num_seqs * BUDGET),
        }[config.loss_agg]
        seq_ratio = math.exp(sum(logp[i][t] - old[i][t] for t in tokens[i]) / lengths[i])
        for t in tokens[i]:
            ratio = seq_ratio if config.importance_level == "sequence" else math.exp(logp[i][t] - old[i][t])
            tis = 1.0 if config.tis_cap is None else min(math.exp(old[i][t] - sampler[i][t]), config.tis_cap)
            d = ref[i][t] - logp[i][t]
            kl, dkl = {"k1": (-d, 1.0), "k2": (0.5 * d * d, -d), "k3": (math.exp(d) - d - 1, 1 - math.exp(d))}[
                config.kl_estimator
            ]
            grad[i][t] += weight * config.kl_coef * dkl
            if config.policy_loss == "cispo":  # a constant weight times log pi: the gradient is the weight's
                cispo_weight = min(ratio, 1 + config.clip_eps_high)
                loss += weight * (-tis * cispo_weight * adv[i] * logp[i][t] + config.kl_coef * kl)
                grad[i][t] += weight * -tis * cispo_weight * adv[i]
                continue
            unclipped = ratio * adv[i]
            clipped = min(max(ratio, 1 - config.clip_eps_low), 1 + config.clip_eps_high) * adv[i]
            pg = -min(unclipped, clipped)
            through_ratio = unclipped <= clipped  # the unclipped term is the min: the gradient flows through rho
            if config.policy_loss == "dual_clip" and adv[i] < 0 and -config.dual_clip_c * adv[i] < pg:
                pg, through_ratio = -config.dual_clip_c * adv[i], False
            loss += weight * (tis * pg + config.kl_coef * kl)
            if through_ratio:
                if config.importance_level == "token":
                    grad[i][t] += weight * -tis * ratio * adv[i]
                else:  # d rho_i / d logp_it' = rho_i / |y_i| for every token t' of the sequence
                    for t2 in tokens[i]:
                        grad[i][t2] += weight * -tis * ratio * adv[i] / lengths[i]
    return loss, torch.tensor(grad, dtype=torch.float64)


def run_loss(inputs, config, **overrides):
    logp = inputs["logp"].clone().requires_grad_(True)
    loss, metrics = policy_loss(
        logp,
        overrides.get("old", inputs["old"]),
        inputs["ref"],
        inputs["advantages"],
        inputs["mask"],
        config,
        truncated=inputs["truncated"],
        sampler_logp=inputs["sampler"],
        totals=totals_of(inputs["mask"], config, inputs["truncated"]),
    )
    loss.backward()
    return loss.item(), logp.grad, metrics


CLIPS = [(0.2, 0.2), (0.2, 0.28), (3e-4, 4e-4)]  # GRPO, DAPO clip-higher, GSPO
LEVELS = ["token", "sequence"]


@pytest.mark.parametrize(
    "loss_agg,estimator,clip,importance_level",
    list(itertools.product(["seq_mean", "token_mean", "seq_sum_norm"], ["k1", "k2", "k3"], CLIPS, LEVELS)),
)
def test_loss_and_gradient_match_a_token_loop(loss_agg, estimator, clip, importance_level):
    config = AlgorithmConfig(
        loss_agg=loss_agg,
        kl_estimator=estimator,
        kl_coef=0.1,
        clip_eps_low=clip[0],
        clip_eps_high=clip[1],
        importance_level=importance_level,
    )
    inputs = make_inputs()
    loss, grad, metrics = run_loss(inputs, config)
    expected_loss, expected_grad = loop_loss_and_grad(inputs, config)
    assert loss == pytest.approx(expected_loss, abs=1e-6)
    torch.testing.assert_close(grad, expected_grad, atol=1e-6, rtol=0)
    assert torch.all(grad[~inputs["mask"]] == 0)


@pytest.mark.parametrize("policy_loss_name", ["dual_clip", "cispo"])
@pytest.mark.parametrize("loss_agg", ["seq_mean", "token_mean", "seq_sum_norm"])
@pytest.mark.parametrize("importance_level", ["token", "sequence"])
def test_dual_clip_and_cispo_match_a_token_loop(policy_loss_name, loss_agg, importance_level):
    # ratios reach 1.8: c = 1.05 makes the dual clip act on some tokens with A < 0; cispo caps at 1.28
    config = AlgorithmConfig(
        policy_loss=policy_loss_name, dual_clip_c=1.05, clip_eps_high=0.28, loss_agg=loss_agg, kl_coef=0.1,
        tis_cap=1.1, importance_level=importance_level,
    )
    inputs = make_inputs(seed=4)
    loss, grad, metrics = run_loss(inputs, config)
    expected_loss, expected_grad = loop_loss_and_grad(inputs, config)
    assert loss == pytest.approx(expected_loss, abs=1e-6)
    torch.testing.assert_close(grad, expected_grad, atol=1e-6, rtol=0)
    assert torch.all(grad[~inputs["mask"]] == 0)
    if policy_loss_name == "dual_clip":
        assert metrics["clip/dual_frac"].item() > 0


@pytest.mark.parametrize("loss_agg", ["seq_mean", "token_mean", "seq_sum_norm"])
@pytest.mark.parametrize("importance_level", ["token", "sequence"])
def test_truncation_mask_and_tis_match_a_token_loop(loss_agg, importance_level):
    config = AlgorithmConfig(
        loss_agg=loss_agg, kl_coef=0.05, mask_truncated=True, tis_cap=1.1, importance_level=importance_level
    )
    inputs = make_inputs(seed=1)
    loss, grad, _ = run_loss(inputs, config)
    expected_loss, expected_grad = loop_loss_and_grad(inputs, config)
    assert loss == pytest.approx(expected_loss, abs=1e-6)
    torch.testing.assert_close(grad, expected_grad, atol=1e-6, rtol=0)
    assert torch.all(grad[4] == 0)  # the truncated completion


def test_clipping_by_hand():
    # One completion, two tokens, A = 1: ratio 1.5 is clipped to 1.2 (no gradient), ratio 0.5 is not
    # clipped from below for A > 0 (min picks 0.5 * A, gradient 0.5 * A).
    old = torch.zeros(1, 2, dtype=torch.float64)
    logp = torch.log(torch.tensor([[1.5, 0.5]], dtype=torch.float64)).requires_grad_(True)
    config = AlgorithmConfig(loss_agg="token_mean", clip_eps_low=0.2, clip_eps_high=0.2)
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, metrics = policy_loss(logp, old, None, torch.tensor([1.0]), mask, config, totals=totals_of(mask, config))
    loss.backward()
    assert loss.item() == pytest.approx(-(1.2 + 0.5) / 2, abs=1e-12)
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.25]], dtype=torch.float64))
    assert metrics["clip/high_frac"].item() == 0.5
    assert metrics["clip/low_frac"].item() == 0.0
    assert metrics["ratio/min"].item() == pytest.approx(0.5)
    assert metrics["ratio/max"].item() == pytest.approx(1.5)
    assert metrics["ratio/mean"].item() == pytest.approx(1.0)


def test_kl_metric_by_hand():
    # k3 with d = ref - logp = log 2: exp(d) - d - 1 = 1 - log 2, on both tokens
    logp = torch.zeros(1, 2, dtype=torch.float64)
    ref = torch.full((1, 2), math.log(2), dtype=torch.float64)
    config = AlgorithmConfig(kl_coef=0.5)
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, metrics = policy_loss(logp, None, ref, torch.tensor([0.0]), mask, config, totals=totals_of(mask, config))
    assert metrics["kl/mean"].item() == pytest.approx(1 - math.log(2), abs=1e-12)
    assert loss.item() == pytest.approx(0.5 * (1 - math.log(2)), abs=1e-12)


def reinforce_loss(logp, ref, adv, mask, config):
    """-A log pi + beta KL, each aggregation written out separately: the on-policy GRPO gradient's target."""
    from grpo_cli.algo.kl import kl_estimate

    per_token = (-adv[:, None] * logp + config.kl_coef * kl_estimate(logp, ref, config.kl_estimator)[0]) * mask
    lengths = mask.sum(1)
    if config.loss_agg == "seq_mean":
        return (per_token.sum(1) / lengths).mean()
    if config.loss_agg == "token_mean":
        return per_token.sum() / lengths.sum()
    return per_token.sum() / (len(lengths) * BUDGET)


@pytest.mark.parametrize("loss_agg", ["seq_mean", "token_mean", "seq_sum_norm"])
@pytest.mark.parametrize("kl_coef", [0.0, 0.3])
def test_on_policy_gradient_is_reinforce_with_group_baseline(loss_agg, kl_coef):
    # A tiny softmax policy: logits theta [B, T, V]; the gradient is w.r.t. theta, through log_softmax.
    gen = torch.Generator().manual_seed(3)
    B, T, V = len(LENGTHS), max(LENGTHS), 5
    mask = torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None]
    tokens = torch.randint(V, (B, T), generator=gen)
    theta = torch.randn(B, T, V, generator=gen, dtype=torch.float64, requires_grad=True)
    ref_logits = torch.randn(B, T, V, generator=gen, dtype=torch.float64)
    ref = torch.log_softmax(ref_logits, -1).gather(-1, tokens[..., None])[..., 0]
    adv = torch.tensor(ADVANTAGES, dtype=torch.float64)
    config = AlgorithmConfig(loss_agg=loss_agg, kl_coef=kl_coef)

    def logp_of(theta):
        return torch.log_softmax(theta, -1).gather(-1, tokens[..., None])[..., 0]

    grpo_loss, _ = policy_loss(logp_of(theta), None, ref, adv, mask, config, totals=totals_of(mask, config))
    (grpo_grad,) = torch.autograd.grad(grpo_loss, theta)
    (reinforce_grad,) = torch.autograd.grad(reinforce_loss(logp_of(theta), ref, adv, mask, config), theta)
    torch.testing.assert_close(grpo_grad, reinforce_grad, atol=1e-9, rtol=0)
    assert grpo_grad.abs().max() > 1e-3


@pytest.mark.parametrize("loss_agg", ["seq_mean", "token_mean", "seq_sum_norm"])
@pytest.mark.parametrize("importance_level", ["token", "sequence"])
def test_micro_batches_sum_to_the_batch_loss(loss_agg, importance_level):
    config = AlgorithmConfig(loss_agg=loss_agg, kl_coef=0.1, mask_truncated=True, importance_level=importance_level)
    inputs = make_inputs(seed=2)
    whole_loss, whole_grad, whole_metrics = run_loss(inputs, config)

    totals = totals_of(inputs["mask"], config, inputs["truncated"])
    logp = inputs["logp"].clone().requires_grad_(True)
    parts, total = [], 0.0
    for rows in (slice(0, 2), slice(2, 5), slice(5, 6)):
        loss, metrics = policy_loss(
            logp[rows], inputs["old"][rows], inputs["ref"][rows], inputs["advantages"][rows], inputs["mask"][rows],
            config, truncated=inputs["truncated"][rows], totals=totals,
        )
        loss.backward()
        total += loss.item()
        parts.append(metrics)
    assert total == pytest.approx(whole_loss, abs=1e-12)
    torch.testing.assert_close(logp.grad, whole_grad, atol=1e-12, rtol=0)
    merged = merge_metrics(parts)
    for key, value in whole_metrics.items():
        assert merged[key] == pytest.approx(value.item(), abs=1e-12), key


def test_zero_advantages_leave_only_the_kl_gradient():
    inputs = make_inputs()
    inputs["advantages"] = torch.zeros(len(LENGTHS), dtype=torch.float64)
    no_kl = AlgorithmConfig(kl_coef=0.0)
    _, grad, metrics = run_loss(inputs, no_kl)
    assert torch.all(grad == 0)
    assert metrics["clip/low_frac"].item() == 0 and metrics["clip/high_frac"].item() == 0

    with_kl = AlgorithmConfig(kl_coef=0.2)
    _, grad, _ = run_loss(inputs, with_kl)
    _, kl_grad = loop_loss_and_grad(inputs, with_kl)
    torch.testing.assert_close(grad, kl_grad, atol=1e-12, rtol=0)
    assert grad.abs().max() > 1e-3


def test_missing_inputs_are_errors():
    inputs = make_inputs()
    mask = inputs["mask"]
    totals = totals_of(mask, AlgorithmConfig())
    with pytest.raises(ValueError, match="kl_coef"):
        policy_loss(inputs["logp"], None, None, inputs["advantages"], mask, AlgorithmConfig(kl_coef=0.1), totals=totals)
    with pytest.raises(ValueError, match="tis_cap"):
        policy_loss(inputs["logp"], None, None, inputs["advantages"], mask, AlgorithmConfig(tis_cap=2.0), totals=totals)
    with pytest.raises(ValueError, match="mask_truncated"):
        policy_loss(inputs["logp"], None, None, inputs["advantages"], mask, AlgorithmConfig(mask_truncated=True), totals=totals)
    with pytest.raises(ValueError, match="entropy_coef"):
        policy_loss(inputs["logp"], None, None, inputs["advantages"], mask, AlgorithmConfig(entropy_coef=0.1), totals=totals)


def by_hand(policy_loss_name, ratios, advantages, **algorithm):
    """token_mean loss, its gradient w.r.t. log pi and metrics for completions whose tokens have the given ratios
    (pi_old = 1, so log pi = log ratio); rows are padded with masked tokens."""
    T = max(len(row) for row in ratios)
    mask = torch.tensor([[t < len(row) for t in range(T)] for row in ratios])
    logp = torch.tensor([[math.log(r) for r in row] + [0.0] * (T - len(row)) for row in ratios], dtype=torch.float64)
    logp.requires_grad_(True)
    config = AlgorithmConfig(policy_loss=policy_loss_name, loss_agg="token_mean", **algorithm)
    old = torch.zeros_like(logp)
    loss, metrics = policy_loss(
        logp, old, None, torch.tensor(advantages, dtype=torch.float64), mask, config, totals=totals_of(mask, config)
    )
    loss.backward()
    return loss.item(), logp.grad, {key: value.item() for key, value in metrics.items()}


def test_dual_clip_by_hand():
    # A = -1 with ratios 4, 2, 0.5 and A = +1 with ratios 4, 0.9 (c = 3, eps 0.2):
    #   ratio 4, A < 0: ppo_clip's 4 is bounded by c = 3, no gradient
    #   ratio 2, A < 0: -rho A = 2 > -clip(rho) A = 1.2: loss 2, gradient -A rho = 2
    #   ratio 0.5, A < 0: max(0.5, 0.8) = 0.8 is the clipped term: no gradient
    #   ratio 4, A > 0: -min(4, 1.2) = -1.2, no gradient; ratio 0.9, A > 0: -0.9, gradient -0.9
    loss, grad, metrics = by_hand("dual_clip", [[4.0, 2.0, 0.5], [4.0, 0.9]], [-1.0, 1.0])
    assert loss == pytest.approx((3 + 2 + 0.8 - 1.2 - 0.9) / 5, abs=1e-12)
    torch.testing.assert_close(grad, torch.tensor([[0.0, 2 / 5, 0.0], [0.0, -0.9 / 5, 0.0]], dtype=torch.float64))
    assert metrics["clip/dual_frac"] == pytest.approx(1 / 5)
    assert metrics["clip/low_frac"] == pytest.approx(1 / 5) and metrics["clip/high_frac"] == pytest.approx(1 / 5)

    # the default c = 3 against ppo_clip: only the ratio-4, A < 0 token differs (4 -> 3)
    ppo_loss, ppo_grad, _ = by_hand("ppo_clip", [[4.0, 2.0, 0.5], [4.0, 0.9]], [-1.0, 1.0])
    assert ppo_loss - loss == pytest.approx(1 / 5, abs=1e-12)
    assert ppo_grad[0, 0] == pytest.approx(4 / 5) and grad[0, 0] == 0


def test_cispo_by_hand():
    # w = min(rho, 1.2), stop-gradient: loss -w A log pi, gradient -w A on every token, the capped ones too
    loss, grad, metrics = by_hand("cispo", [[4.0, 0.5], [1.1]], [-1.0, 2.0])
    expected = (1.2 * math.log(4.0) + 0.5 * math.log(0.5) - 1.1 * 2.0 * math.log(1.1)) / 3
    assert loss == pytest.approx(expected, abs=1e-12)
    torch.testing.assert_close(grad, torch.tensor([[1.2 / 3, 0.5 / 3], [-2.2 / 3, 0.0]], dtype=torch.float64))
    assert metrics["clip/high_frac"] == pytest.approx(1 / 3) and metrics["clip/low_frac"] == 0


def test_dr_grpo_divides_by_the_generation_budget_not_the_longest_completion():
    # Completion 0 (2 tokens, A = 1) beside a completion of 3 or of 5 tokens: its gradient is -A / (N x 8)
    # either way, with N = 2 completions and sampler.max_new_tokens = 8.
    config = AlgorithmConfig(loss_agg="seq_sum_norm")
    grads = []
    for other_length in (3, 5):
        mask = torch.arange(8)[None, :] < torch.tensor([2, other_length])[:, None]
        logp = torch.full((2, 8), -1.0, dtype=torch.float64, requires_grad=True)
        loss, _ = policy_loss(logp, None, None, torch.tensor([1.0, -1.0]), mask, config, totals=BatchTotals.of(mask, 8))
        loss.backward()
        assert loss.item() == pytest.approx(-(2 * 1.0 + other_length * -1.0) / (2 * 8), abs=1e-12)
        grads.append(logp.grad[0])
    torch.testing.assert_close(grads[0], grads[1], atol=0, rtol=0)
    torch.testing.assert_close(grads[0][:2], torch.full((2,), -1 / 16, dtype=torch.float64))


def test_an_extreme_log_ratio_is_clamped_not_a_nan():
    # float32, one token whose log-ratio is 100: exp(100) overflows to inf, and inf x A gives an inf loss
    assert torch.isinf(torch.exp(torch.tensor(100.0)))
    logp = torch.tensor([[100.0, 0.1, -0.1]], requires_grad=True)
    mask = torch.ones(1, 3, dtype=torch.bool)
    config = AlgorithmConfig(loss_agg="token_mean")
    loss, metrics = policy_loss(logp, torch.zeros(1, 3), None, torch.tensor([-1.0]), mask, config, totals=totals_of(mask, config))
    loss.backward()
    # the clamped token: exp(20) x |A|, no gradient; the others: -rho A with rho = e^0.1 (not clipped) and
    # e^-0.1 (< 0.8? no: 0.905 is inside the clip range, -rho A = 0.905)
    expected = (math.exp(20.0) + math.exp(0.1) + math.exp(-0.1)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, math.exp(0.1) / 3, math.exp(-0.1) / 3]]))
    assert metrics["clip/logratio_clamped"].item() == 1


def test_an_extreme_k3_is_clamped_and_counted():
    # d = ref - logp = 100 on one token: exp(100) is inf in float32; k3 is capped at 10 with no gradient there
    logp = torch.tensor([[-100.0, -1.0]], requires_grad=True)
    ref = torch.tensor([[0.0, -1.5]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    config = AlgorithmConfig(kl_coef=0.5, loss_agg="token_mean")
    loss, metrics = policy_loss(logp, None, ref, torch.tensor([0.0]), mask, config, totals=totals_of(mask, config))
    loss.backward()
    d = -0.5  # the ordinary token
    assert metrics["kl/mean"].item() == pytest.approx((10.0 + math.exp(d) - d - 1) / 2, rel=1e-6)
    assert loss.item() == pytest.approx(0.5 * (10.0 + math.exp(d) - d - 1) / 2, rel=1e-6)
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 0.5 * (1 - math.exp(d)) / 2]]))
    assert metrics["kl/clamped"].item() == 1
