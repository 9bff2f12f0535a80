"""SmolLM2-135M-Instruct served by vLLM's CPU build as the sampler (the real-model tier, slow): its log-probs
against the learner's, the end-of-turn token, and 2 GRPO steps of full fine-tuning and 2 with LoRA on q/k/v/o,
each pushing the new weights into the engine.

One engine serves the module (it starts in about a minute here): every test first syncs the weights it checks.
"""

from __future__ import annotations

import pytest
import torch
from vllm import SamplingParams
from vllm.inputs import TokensPrompt

from grpo_cli.compose import compose
from grpo_cli.data import Example
from grpo_cli.data.loaders import load_examples
from grpo_cli.data.prompts import encode_prompt
from grpo_cli.models import load_model
from grpo_cli.monitoring.metrics import completion_metrics
from grpo_cli.sampler import build_sampler
from grpo_cli.training.learner import Learner, RolloutBatch
from grpo_cli.training.trainer import grpo_step
from grpo_cli.verifier import build_verifier
from grpo_cli.verifier.score import Score
from smollm2 import (
    END_OF_TURN,
    GRPO_SETTINGS,
    LONG_QUESTION,
    MODES,
    SHORT_ANSWER,
    SHORT_QUESTION,
    greedy,
    sequence_logprobs,
)

pytestmark = [pytest.mark.slow, pytest.mark.real_model, pytest.mark.vllm]

# One engine for the module: max_model_len and KV cache sized to these short prompts.
SETTINGS = [*GRPO_SETTINGS, "sampler=vllm", "sampler.kv_cache_gb=1", "sampler.max_model_len=512", "sampler.temperature=0.7"]


@pytest.fixture(scope="module")
def learner(real_model):
    """A learner around the checkpoint, at this module's sampling temperature (no step is taken)."""
    config = compose(SETTINGS)
    return Learner(config, load_model(config.model), total_steps=1)


@pytest.fixture(scope="module")
def sampler(learner, real_tokenizer):
    """The module's engine, started for the checkpoint."""
    sampler = build_sampler(compose(SETTINGS), learner.full_model, real_tokenizer)
    yield sampler
    sampler.close()


def engine_logprobs(sampler, ids: list[int]) -> torch.Tensor:
    """The engine's log-probs of ids[1:] given their prefixes (prompt log-probs: T = 1, no truncation)."""
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
    (output,) = sampler.llm.generate([TokensPrompt(prompt_token_ids=ids)], params, use_tqdm=False)
    return torch.tensor([step[token].logprob for step, token in zip(output.prompt_logprobs[1:], ids[1:])])


def test_engine_and_learner_log_probs_of_sampled_completions(real_tokenizer, learner, sampler):
    sampler.sync_weights(learner.full_model)
    config = compose(SETTINGS)
    prompts = [encode_prompt(example, real_tokenizer, config.data) for example in load_examples(config, "train")[:3]]
    groups = sampler.generate(prompts, n=4, seed=1)
    batch = RolloutBatch.build(prompts, groups, torch.zeros(12))
    diff = (learner.policy_logprobs(batch) - batch.sampler_logprobs).abs()[batch.completion_mask]
    print(f"vLLM (CPU) sampler vs learner, {diff.numel()} tokens at T=0.7: mean {diff.mean():.2e}, max {diff.max():.2e} nats")
    assert diff.mean() < 1e-3


def test_the_engine_stops_at_the_end_of_turn_token_which_is_not_truncation(real_tokenizer, learner, sampler):
    sampler.sync_weights(learner.full_model)
    config = compose(SETTINGS)
    questions = [SHORT_QUESTION, LONG_QUESTION]
    prompts = [encode_prompt(Example(str(i), q, ""), real_tokenizer, config.data) for i, q in enumerate(questions)]
    short, long = [group[0] for group in sampler.generate(prompts, n=1, seed=0, temperature=0.0)]
    assert short.text == SHORT_ANSWER and short.finish_reason == "stop"
    assert short.token_ids[-1] == END_OF_TURN and END_OF_TURN not in short.token_ids[:-1]
    assert long.finish_reason == "length" and len(long.token_ids) == 24
    # The engine's greedy tokens are transformers' for the same weights.
    assert short.token_ids == greedy(learner.policy, prompts[0], 24)
    assert long.token_ids == greedy(learner.policy, prompts[1], 24)
    scores = [Score(0.0, False, None, "no_answer")] * 2
    assert completion_metrics([short, long], scores)["completions/truncated_frac"] == 0.5
    # In the learner's batch the EOS that ends a completion is a loss token; padding is not.
    batch = RolloutBatch.build(prompts, [[short], [long]], torch.tensor([1.0, -1.0]))
    assert batch.completion_mask.sum(dim=1).tolist() == [len(short.token_ids), 24]
    assert batch.completion_ids[0, len(short.token_ids) - 1] == END_OF_TURN


@pytest.mark.parametrize("mode", MODES)
def test_two_grpo_steps_each_push_the_new_weights_into_the_engine(mode, real_tokenizer, sampler):
    config = compose([*SETTINGS, *MODES[mode]])
    learner = Learner(config, load_model(config.model), total_steps=2)
    sampler.sync_weights(learner.full_model)  # the engine served the other test's weights
    examples = load_examples(config, "train")
    prompt = encode_prompt(examples[10], real_tokenizer, config.data)
    sequence = prompt + greedy(learner.policy, prompt, 16)
    previous = engine_logprobs(sampler, sequence)
    with build_verifier(config.verifier) as verifier:
        for step in (1, 2):
            metrics, _ = grpo_step(config, step, examples[2 * step - 2 : 2 * step], real_tokenizer, sampler, verifier, learner)
            assert metrics["nonfinite"] == 0.0
            # The engine sampled this step with the weights the learner had before its update.
            assert metrics["logprob_mismatch/mean"] < 1e-3
            synced = engine_logprobs(sampler, sequence)
            expected = sequence_logprobs(learner.policy, sequence)
            print(f"{mode} step {step}: engine vs learner after the sync, max {(synced - expected).abs().max():.1e}; "
                  f"the step moved them by up to {(synced - previous).abs().max():.1e}")
            assert (synced - expected).abs().max() < 1e-3
            assert (synced - previous).abs().max() > 1e-2  # a stale engine would fail the check above
            previous = synced
    [[completion]] = sampler.generate([prompt], n=1, seed=0, temperature=0.0)
    assert completion.token_ids == greedy(learner.policy, prompt, len(completion.token_ids))
