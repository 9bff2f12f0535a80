"""The learner on a tiny random Llama: batch layout, log-probs, gradient accumulation, updates, resume."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from grpo_cli.algo.advantages import compute_advantages
from grpo_cli.config import AlgorithmConfig, Config
from grpo_cli.models import load_checkpoint_weights
from grpo_cli.sampler.base import Completion
from grpo_cli.training import learner as learner_module
from grpo_cli.training.learner import (
    Learner,
    RolloutBatch,
    completion_logprobs,
    lr_factor,
    shares_prompt,
    token_logprobs,
)

VOCAB = 100
TEMPERATURE = 0.8
GROUP_SIZE = 4
MAX_NEW_TOKENS = 6
REWARDS = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config)


def completion(token_ids: list[int]) -> Completion:
    finish_reason = "length" if len(token_ids) == MAX_NEW_TOKENS else "stop"
    return Completion(token_ids=token_ids, logprobs=[-4.0] * len(token_ids), text="", finish_reason=finish_reason)


def make_groups(seed: int = 0) -> tuple[list[list[int]], list[list[Completion]]]:
    """3 prompts of 5, 3 and 7 tokens, G = 4 completions each of 1 to 6 tokens (6: truncated)."""
    gen = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(1, VOCAB, (n,), generator=gen).tolist() for n in (5, 3, 7)]
    lengths = torch.randint(1, MAX_NEW_TOKENS + 1, (len(prompts), GROUP_SIZE), generator=gen).tolist()
    groups = [[completion(torch.randint(1, VOCAB, (n,), generator=gen).tolist()) for n in row] for row in lengths]
    return prompts, groups


def make_batch(algorithm: AlgorithmConfig) -> RolloutBatch:
    prompts, groups = make_groups()
    advantages = compute_advantages(torch.tensor(REWARDS), algorithm, step=1)
    return RolloutBatch.build(prompts, groups, advantages)


def make_config(micro_batch_tokens: int | None = 40, lr: float = 1e-3, **algorithm) -> Config:
    """40 tokens: the 12 completions of make_batch (rows of 4 to 13 tokens) take 4 to 6 micro-batches."""
    config = Config()
    config.algorithm = AlgorithmConfig(group_size=GROUP_SIZE, **algorithm)
    config.train.micro_batch_tokens = micro_batch_tokens
    config.sampler.temperature = TEMPERATURE
    config.optimizer.lr = lr
    return config


def straightforward_logprobs(model, prompt: list[int], tokens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One unpadded sequence, the whole log_softmax: log-probs and entropies of the completion tokens."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1]
    logprobs = torch.log_softmax(logits / TEMPERATURE, dim=-1)
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    return logprobs[torch.arange(len(tokens)), torch.tensor(tokens)], entropy


def test_batch_layout_by_hand():
    groups = [[completion([5, 6]), completion([7])], [completion([8]), completion([9, 10, 11])]]
    batch = RolloutBatch.build([[1, 2], [3]], groups, torch.tensor([0.5, -0.5, 1.0, -1.0]))
    assert batch.input_ids.tolist() == [[1, 2, 5, 6, 0], [1, 2, 7, 0, 0], [0, 3, 8, 0, 0], [0, 3, 9, 10, 11]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [0, 1, 1, 0, 0], [0, 1, 1, 1, 1]]
    assert batch.completion_mask.int().tolist() == [[1, 1, 0], [1, 0, 0], [1, 0, 0], [1, 1, 1]]
    assert batch.completion_ids.tolist() == [[5, 6, 0], [7, 0, 0], [8, 0, 0], [9, 10, 11]]
    assert batch.sampler_logprobs.tolist() == [[-4, -4, 0], [-4, 0, 0], [-4, 0, 0], [-4, -4, -4]]
    assert batch.advantages.tolist() == [0.5, -0.5, 1.0, -1.0]

    # Longest first (4, 4, 3, 2 tokens); at most 10 padded tokens: rows 0 and 3 take 2 x (2 + 3), row 1 would
    # make it 3 x 5.
    (first_rows, first), (second_rows, second) = batch.micro_batches(10)
    assert first_rows.tolist() == [0, 3] and second_rows.tolist() == [1, 2]
    assert first.input_ids.tolist() == [[1, 2, 5, 6, 0], [0, 3, 9, 10, 11]]
    assert first.advantages.tolist() == [0.5, -1.0]
    assert second.input_ids.tolist() == [[1, 2, 7], [0, 3, 8]]  # completion columns trimmed to 1
    assert second.completion_mask.int().tolist() == [[1], [1]]
    # Sharing the prompt, a micro-batch costs distinct prompts x 2 + completions x 3: row 1 reuses row 0's
    # prompt, 2 x 2 + 3 x 3 = 13, then row 2 would make it 2 x 2 + 4 x 3 = 16.
    assert [rows.tolist() for rows, _ in batch.micro_batches(13, share_prompt=True)] == [[0, 3, 1], [2]]
    assert [rows.tolist() for rows, _ in batch.micro_batches(13)] == [[0, 3], [1, 2]]
    prompts, prompt_of_row = batch.distinct_prompts()
    assert prompts[prompt_of_row].tolist() == [[1, 2], [1, 2], [-1, 3], [-1, 3]]
    # A loss mask with a hole (tokens an environment wrote) does not shorten the completion.
    batch.completion_mask[3, 2] = False
    assert batch.micro_batches(100)[0][1].completion_mask.int().tolist() == [[1, 1, 0], [1, 1, 0], [1, 0, 0], [1, 0, 0]]

    kept = batch.select(torch.tensor([False, True, True, False]))
    assert kept.input_ids.tolist() == [[1, 2, 7, 0, 0], [0, 3, 8, 0, 0]]


def test_truncated_flags_come_from_finish_reason():
    batch = make_batch(AlgorithmConfig(group_size=GROUP_SIZE))
    lengths = batch.completion_mask.sum(1)
    assert batch.truncated.tolist() == (lengths == MAX_NEW_TOKENS).tolist()
    assert 0 < int(batch.truncated.sum()) < batch.size


@pytest.mark.parametrize("share_prompt", [True, False])
def test_micro_batched_logprobs_equal_a_full_log_softmax(share_prompt):
    model = tiny_llama()
    learner = Learner(make_config(), copy.deepcopy(model), total_steps=1)
    batch = make_batch(learner.algorithm)
    logp = learner.policy_logprobs(batch)
    assert len(batch.micro_batches(40, share_prompt=True)) > 1

    prompts, groups = make_groups()
    rows = [(prompt, c.token_ids) for prompt, group in zip(prompts, groups) for c in group]
    with torch.no_grad():
        _, entropy = completion_logprobs(model, batch, TEMPERATURE, share_prompt=share_prompt)
    for i, (prompt, tokens) in enumerate(rows):
        expected, expected_entropy = straightforward_logprobs(model, prompt, tokens)
        torch.testing.assert_close(logp[i, : len(tokens)], expected, atol=1e-6, rtol=0)
        assert torch.all(logp[i, len(tokens) :] == 0)
        torch.testing.assert_close(entropy[i, : len(tokens)], expected_entropy, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (5, 1.0), (0, 0.9), (8, 0.8)])
def test_shared_prompt_logprobs_entropies_and_gradients_equal_the_unshared_ones(top_k, top_p):
    batch = make_batch(AlgorithmConfig(group_size=GROUP_SIZE))
    weights = torch.randn(batch.completion_mask.shape, generator=torch.Generator().manual_seed(1))
    results = []
    for share_prompt in (True, False):
        model = tiny_llama()
        logp, entropy = completion_logprobs(model, batch, TEMPERATURE, top_k, top_p, share_prompt=share_prompt)
        mask = batch.completion_mask
        ((logp * weights).masked_fill(~mask, 0).sum() + entropy.masked_fill(~mask, 0).sum()).backward()
        grads = {name: p.grad for name, p in model.named_parameters()}
        results.append((logp.masked_fill(~mask, 0), entropy.masked_fill(~mask, 0), grads))
    (shared_logp, shared_entropy, shared_grads), (logp, entropy, grads) = results
    torch.testing.assert_close(shared_logp, logp, atol=1e-6, rtol=0)
    torch.testing.assert_close(shared_entropy, entropy, atol=1e-6, rtol=0)
    assert shared_grads.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(shared_grads[name], grad, atol=1e-5, rtol=1e-5, msg=name)
    assert grads["model.layers.0.self_attn.k_proj.weight"].abs().max() > 1e-3  # the prompt's keys get gradient


def test_prompt_is_shared_except_where_backward_recomputes_layers():
    model = tiny_llama()
    assert shares_prompt(model)
    model.gradient_checkpointing_enable()
    assert not shares_prompt(model.train()) and shares_prompt(model.eval())
    assert not shares_prompt(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (4, 1.0), (0, 0.8), (6, 0.9)])
def test_chunked_logprobs_entropies_and_their_gradients_equal_a_full_log_softmax(top_k, top_p):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=gen, requires_grad=True)
    weights, entropy_weights = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen)
    # The whole distribution, autograd's way: log_softmax over the support, -inf (probability 0) elsewhere.
    z = logits.detach().flatten(0, 1) / 0.7
    support = learner_module.sampling_support(z, top_k, top_p).view(3, 5, 11)
    full = torch.log_softmax((logits / 0.7).masked_fill(~support, float("-inf")), dim=-1)
    tokens = torch.multinomial(full.detach().exp().flatten(0, 1), 1, generator=gen).view(3, 5)  # drawn: in the support
    expected = full.gather(-1, tokens[..., None])[..., 0]
    expected_entropy = -(full.exp() * full.masked_fill(~support, 0.0)).sum(-1)
    (expected_grad,) = torch.autograd.grad((expected * weights + expected_entropy * entropy_weights).sum(), logits)
    assert bool((~support).any()) == ((top_k, top_p) != (0, 1.0))

    # 15 tokens in chunks of 4
    logp, entropy = token_logprobs(logits, tokens, temperature=0.7, chunk_values=4 * 11, top_k=top_k, top_p=top_p)
    (grad,) = torch.autograd.grad((logp * weights + entropy * entropy_weights).sum(), logits)
    torch.testing.assert_close(logp, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(entropy, expected_entropy, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad, expected_grad, atol=1e-6, rtol=0)
    assert torch.all(grad.masked_select(~support) == 0)


def group_order_micro_batches(batch: RolloutBatch, token_budget: int, share_prompt: bool = False) -> list:
    """The learner's micro-batches before length packing: consecutive chunks of 4 completions."""
    return [(torch.arange(start, start + 4), batch.select(slice(start, start + 4))._trimmed()) for start in range(0, batch.size, 4)]


@pytest.mark.parametrize("loss_agg", ["seq_mean", "token_mean", "seq_sum_norm"])
def test_length_packed_micro_batches_and_the_shared_prompt_give_the_update_in_one_go(loss_agg, monkeypatch):
    algorithm = dict(loss_agg=loss_agg, kl_coef=0.1, num_iterations=2, mask_truncated=True)
    batch = make_batch(AlgorithmConfig(group_size=GROUP_SIZE, **algorithm))
    first = Learner(make_config(**algorithm), tiny_llama(), total_steps=1)
    batch.ref_logprobs = first.reference_logprobs(batch)
    # an older policy than the current one, so some ratios leave the clip range
    staleness = 0.3 * torch.rand(batch.completion_mask.shape, generator=torch.Generator().manual_seed(0))
    batch.old_logprobs = first.old_logprobs(batch) - staleness

    def update(micro_batch_tokens: int | None) -> tuple[dict, list[torch.Tensor]]:
        learner = Learner(make_config(micro_batch_tokens, **algorithm), tiny_llama(), total_steps=1)
        metrics = learner.backward(batch)
        return metrics, [p.grad for p in learner.trainable_parameters]

    packed = update(20)  # 6 to 9 micro-batches, longest first, prompts shared
    assert len(batch.micro_batches(20, share_prompt=True)) > 5
    whole = update(1000)  # one micro-batch
    with monkeypatch.context() as patch:
        patch.setattr(learner_module, "shares_prompt", lambda model: False)
        unshared = update(20)
        patch.setattr(RolloutBatch, "micro_batches", group_order_micro_batches)
        group_order = update(None)
    assert packed[0]["clip/low_frac"] + packed[0]["clip/high_frac"] > 0
    for metrics, grads in (whole, unshared, group_order):
        assert metrics.keys() == packed[0].keys()
        for key, value in metrics.items():
            assert packed[0][key] == pytest.approx(value, abs=1e-6), key
        for grad, packed_grad in zip(grads, packed[1], strict=True):
            torch.testing.assert_close(packed_grad, grad, atol=1e-6, rtol=1e-5)


def test_each_distinct_prompt_runs_once_per_pass():
    learner = Learner(make_config(), tiny_llama(), total_steps=1)
    batch = make_batch(learner.algorithm)
    prompts, _ = make_groups()
    calls = []
    learner.policy.model.embed_tokens.register_forward_hook(lambda module, args, out: calls.append(args[0]))
    for run_pass in (learner.backward, learner.policy_logprobs):
        calls.clear()
        run_pass(batch)
        micro_batches = batch.micro_batches(40, share_prompt=True)
        assert len(calls) == 1 + len(micro_batches) > 3
        # one pass of the 3 prompts, longest first (7, 5, 3 tokens, left-padded), then the 12 completions alone
        expected = [[0] * (7 - len(p)) + p for p in sorted(prompts, key=len, reverse=True)]
        assert calls[0].tolist() == expected
        assert [c.tolist() for c in calls[1:]] == [micro.completion_ids.tolist() for _, micro in micro_batches]
    assert all(p.grad is not None for p in learner.trainable_parameters)


def test_auto_micro_batch_budget_is_eight_completions_of_the_padded_width():
    batch = make_batch(AlgorithmConfig(group_size=GROUP_SIZE))
    assert batch.input_ids.shape[1] == 13
    assert learner_module.micro_batch_token_budget(None, batch) == 8 * 13
    assert learner_module.micro_batch_token_budget(50, batch) == 50


def test_bare_forward_backward_runs_every_completion_with_its_prompt_and_keeps_no_gradient():
    learner = Learner(make_config(), tiny_llama(), total_steps=1)
    batch = make_batch(learner.algorithm)
    shapes = []
    learner.policy.model.embed_tokens.register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape)))
    learner.bare_forward_backward(batch)
    # 40-token micro-batches of whole rows, longest first: no prompt is shared
    assert shapes == [tuple(micro.input_ids.shape) for _, micro in batch.micro_batches(40)]
    assert sum(rows * width for rows, width in shapes) <= 40 * len(shapes) and len(shapes) > 3
    assert all(p.grad is None for p in learner.trainable_parameters)


def test_updates_on_a_fixed_batch_lower_the_loss_and_move_the_policy():
    learner = Learner(make_config(lr=1e-3, num_iterations=4), tiny_llama(), total_steps=1)
    start = [p.detach().clone() for p in learner.trainable_parameters]
    batch = make_batch(learner.algorithm)
    batch.old_logprobs = learner.old_logprobs(batch)

    losses = [learner.step(batch)["loss"] for _ in range(4)]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    assert all(not torch.equal(p, p0) for p, p0 in zip(learner.trainable_parameters, start))

    # completions with a positive advantage became more likely, those with a negative one less
    new_logp = learner.policy_logprobs(batch)
    change = ((new_logp - batch.old_logprobs) * batch.completion_mask).sum(1)
    assert torch.all(change[batch.advantages > 0] > 0) and torch.all(change[batch.advantages < 0] < 0)


def test_non_finite_loss_skips_the_update():
    learner = Learner(make_config(), tiny_llama(), total_steps=10)
    start = [p.detach().clone() for p in learner.trainable_parameters]
    batch = make_batch(learner.algorithm)
    batch.advantages[2] = float("nan")

    metrics = learner.step(batch)
    assert metrics["nonfinite"] == 1.0 and math.isnan(metrics["loss"])
    assert all(torch.equal(p, p0) for p, p0 in zip(learner.trainable_parameters, start))
    assert learner.optimizer.state_dict()["state"] == {} and learner.scheduler.last_epoch == 0

    batch.advantages[2] = 0.0
    assert learner.step(batch)["nonfinite"] == 0.0


def test_lr_schedule_by_hand():
    assert [lr_factor(s, 3, 11, "cosine") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(7, 3, 11, "cosine") == pytest.approx(0.5)  # halfway through the 8 decay steps
    assert lr_factor(11, 3, 11, "cosine") == pytest.approx(0.0)
    assert lr_factor(50, 3, 11, "constant") == 1.0


def test_num_iterations_updates_share_a_training_steps_lr():
    config = make_config(lr=1e-3, num_iterations=2)
    config.optimizer.warmup_steps = 3
    learner = Learner(config, tiny_llama(), total_steps=10)
    lrs = []
    for _ in range(2):
        batch = make_batch(learner.algorithm)
        lrs += [learner.step(batch)["lr"], learner.train_on(batch)["lr"]]  # step() alone does not advance it
    assert lrs == pytest.approx([0.25e-3, 0.25e-3, 0.5e-3, 0.5e-3])


def test_skipped_updates_and_empty_steps_do_not_shift_the_lr_schedule_and_resume_restores_it(tmp_path):
    config = make_config(lr=1e-3, num_iterations=2)
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 2
    total = 7
    expected = [1e-3 * lr_factor(step, 2, total, "cosine") for step in range(total)]

    def train_step(learner: Learner, step: int) -> dict:
        if step == 3:  # every group filtered out (algorithm.filter_zero_variance): nothing to learn from
            return learner.skip_step()
        batch = make_batch(config.algorithm)
        if step == 1:  # a NaN advantage: both updates of this step are skipped
            batch.advantages[2] = float("nan")
        return learner.train_on(batch)

    straight = Learner(config, tiny_llama(), total_steps=total)
    metrics = [train_step(straight, step) for step in range(total)]
    assert [m["nonfinite"] for m in metrics] == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert [m["lr"] for m in metrics] == expected
    assert metrics[3]["loss"] is None and metrics[3]["grad_norm"] is None

    interrupted = Learner(config, tiny_llama(), total_steps=total)
    for step in range(5):
        train_step(interrupted, step)
    interrupted.policy.save_pretrained(tmp_path)  # what a checkpoint writes
    resumed = Learner(config, tiny_llama(seed=1), total_steps=total)
    load_checkpoint_weights(resumed.policy, tmp_path)
    resumed.load_state_dict(copy.deepcopy(interrupted.state_dict()))
    assert [train_step(resumed, step)["lr"] for step in (5, 6)] == expected[5:]
    for p_resumed, p_straight in zip(resumed.trainable_parameters, straight.trainable_parameters):
        assert torch.equal(p_resumed, p_straight)


def test_resumed_learner_continues_identically(tmp_path):
    config = make_config(lr=1e-3, kl_coef=0.05)
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 1
    original = Learner(config, tiny_llama(), total_steps=5)
    batch = make_batch(original.algorithm)
    batch.ref_logprobs = original.reference_logprobs(batch)
    for _ in range(2):
        original.step(batch)

    resumed = Learner(config, tiny_llama(seed=1), total_steps=5)
    original.policy.save_pretrained(tmp_path)  # what a checkpoint writes
    load_checkpoint_weights(resumed.policy, tmp_path)
    resumed.load_state_dict(copy.deepcopy(original.state_dict()))  # as if read back from disk
    assert resumed.step(batch) == original.step(batch)
    for p_resumed, p_original in zip(resumed.trainable_parameters, original.trainable_parameters):
        assert torch.equal(p_resumed, p_original)


def test_reference_is_the_frozen_start_and_skipped_without_kl():
    without_kl = Learner(make_config(kl_coef=0.0), tiny_llama(), total_steps=1)
    assert without_kl.reference_logprobs(make_batch(without_kl.algorithm)) is None and without_kl.reference is None
    learner = Learner(make_config(lr=1e-2, kl_coef=0.1), tiny_llama(), total_steps=3)
    batch = make_batch(learner.algorithm)
    assert learner.old_logprobs(batch) is None
    start = learner.reference_logprobs(batch)
    batch.ref_logprobs = start
    metrics = [learner.step(batch) for _ in range(3)]
    torch.testing.assert_close(learner.reference_logprobs(batch), start, atol=0, rtol=0)
    assert metrics[0]["kl/mean"] == pytest.approx(0.0, abs=1e-7) and metrics[-1]["kl/mean"] > 1e-4


def test_train_on_runs_num_iterations_updates_from_one_set_of_old_logprobs():
    config = make_config(lr=1e-3, kl_coef=0.05, num_iterations=3)
    by_hand, driven = Learner(config, tiny_llama(), total_steps=2), Learner(config, tiny_llama(), total_steps=2)
    batch = make_batch(config.algorithm)

    batch.ref_logprobs = by_hand.reference_logprobs(batch)
    batch.old_logprobs = by_hand.old_logprobs(batch)
    updates = [by_hand.step(batch) for _ in range(3)]
    metrics = driven.train_on(make_batch(config.algorithm))

    mismatch_keys = ("logprob_mismatch/mean", "logprob_mismatch/max")
    assert metrics == updates[-1] | {key: updates[0][key] for key in mismatch_keys}
    assert updates[-1]["logprob_mismatch/mean"] > updates[0]["logprob_mismatch/mean"]  # the policy moved since sampling
    assert metrics["ratio/max"] > 1.0  # the last of the three updates saw the policy move away from old
    assert set(metrics) == {
        "loss", "kl/mean", "kl/clamped", "clip/low_frac", "clip/high_frac", "clip/logratio_clamped", "ratio/mean",
        "ratio/min", "ratio/max", "entropy/mean", "advantage/mean", "advantage/std", "grad_norm", "lr", "nonfinite", *mismatch_keys,
    }
    for p_driven, p_by_hand in zip(driven.trainable_parameters, by_hand.trainable_parameters):
        assert torch.equal(p_driven, p_by_hand)


def ten_steps_update(dtype: torch.dtype) -> tuple[torch.Tensor, Learner]:
    """All weights' change (float32, flattened) after 10 updates at lr 1e-6 of a model loaded in `dtype`."""
    model = tiny_llama().to(dtype)
    start = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    learner = Learner(make_config(lr=1e-6), model, total_steps=10)
    batch = make_batch(learner.algorithm)
    for _ in range(10):
        assert learner.step(batch)["nonfinite"] == 0.0
    end = torch.cat([p.detach().float().flatten() for p in learner.policy.parameters()])
    return end - start, learner


def test_bfloat16_full_fine_tuning_keeps_float32_master_weights_and_moves_as_float32_does():
    fp32_update, _ = ten_steps_update(torch.float32)
    bf16_update, learner = ten_steps_update(torch.bfloat16)
    fp32_changed, bf16_changed = (fp32_update != 0).float().mean(), (bf16_update != 0).float().mean()
    cosine = F.cosine_similarity(bf16_update, fp32_update, dim=0)
    print(f"changed: float32 {fp32_changed:.4f}, bfloat16 {bf16_changed:.4f}; cosine {cosine:.4f}")
    assert fp32_changed > 0.9  # all but the embedding rows of tokens absent from the batch
    # bfloat16 weights updated in place: most updates are below half a bfloat16 ulp and round away.
    assert bf16_changed > 0.99 * fp32_changed
    assert cosine > 0.9
    # Master weights and AdamW moments in float32; the forward pass computes in bfloat16.
    assert all(p.dtype == torch.float32 for p in learner.policy.parameters())
    assert all(s.dtype == torch.float32 for state in learner.optimizer.state.values() for s in state.values() if s.dim())
    batch = make_batch(learner.algorithm)
    with learner._autocast():
        logits = learner.policy(input_ids=batch.input_ids[:2]).logits
    assert logits.dtype == torch.bfloat16
