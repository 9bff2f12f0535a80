"""The GRPO policy loss against an independent per-token loop, by hand, and against REINFORCE."""

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
    num_seqs, num_tokens, max_len = sum(n > 0 for n in lengths), sum(lengths), max(lengths)
    loss, grad = 0.0, [[0.0] * T for _ in range(B)]
    for i in range(B):
        if not tokens[i]:
            continue
        weight = {
            "seq_mean": 1 / (num_seqs * lengths[i]),
            "token_mean": 1 / num_tokens,
            "seq_sum_norm": 1 / (num_seqs * max_len),
        }[config.loss_agg]
        seq_ratio = math.exp(sum(logp[i][t] - old[i][t] for t in tokens[i]) / lengths[i])
        for t in tokens[i]:
            ratio = seq_ratio if config.importance_level == "sequence" else math.exp(logp[i][t] - old[i][t])
            tis = 1.0 if config.tis_cap is None else min(math.exp(old[i][t] - sampler[i][t]), config.tis_cap)
            unclipped = ratio * adv[i]
            clipped = min(max(ratio, 1 - config.clip_eps_low), 1 + config.clip_eps_high) * adv[i]
            d = ref[i][t] - logp[i][t]
            kl, dkl = {"k1": (-d, 1.0), "k2": (0.5 * d * d, -d), "k3": (math.exp(d) - d - 1, 1 - math.exp(d))}[
                config.kl_estimator
            ]
            loss += weight * (-tis * min(unclipped, clipped) + config.kl_coef * kl)
            grad[i][t] += weight * config.kl_coef * dkl
            if unclipped <= clipped:  # the unclipped term is the min: the gradient flows through the ratio
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
    loss, metrics = policy_loss(logp, old, None, torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool), config)
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
    loss, metrics = policy_loss(logp, None, ref, torch.tensor([0.0]), torch.ones(1, 2, dtype=torch.bool), config)
    assert metrics["kl/mean"].item() == pytest.approx(1 - math.log(2), abs=1e-12)
    assert loss.item() == pytest.approx(0.5 * (1 - math.log(2)), abs=1e-12)


def reinforce_loss(logp, ref, adv, mask, config):
    """-A log pi + beta KL, each aggregation written out separately: the on-policy GRPO gradient's target."""
    from grpo_cli.algo.kl import kl_estimate

    per_token = (-adv[:, None] * logp + config.kl_coef * kl_estimate(logp, ref, config.kl_estimator)) * mask
    lengths = mask.sum(1)
    if config.loss_agg == "seq_mean":
        return (per_token.sum(1) / lengths).mean()
    if config.loss_agg == "token_mean":
        return per_token.sum() / lengths.sum()
    return per_token.sum() / (len(lengths) * lengths.max())


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

    grpo_loss, _ = policy_loss(logp_of(theta), None, ref, adv, mask, config)
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

    totals = BatchTotals.of(loss_mask(inputs["mask"], inputs["truncated"], config))
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
    with pytest.raises(ValueError, match="kl_coef"):
        policy_loss(inputs["logp"], None, None, inputs["advantages"], mask, AlgorithmConfig(kl_coef=0.1))
    with pytest.raises(ValueError, match="tis_cap"):
        policy_loss(inputs["logp"], None, None, inputs["advantages"], mask, AlgorithmConfig(tis_cap=2.0))
    with pytest.raises(ValueError, match="mask_truncated"):
        policy_loss(inputs["logp"], None, None, inputs["advantages"], mask, AlgorithmConfig(mask_truncated=True))
