"""SmolLM2-135M-Instruct through the transformers sampler and the learner: its chat template with and without
a system prompt, its end-of-turn token (also its pad token) ending completions, in the loss and not counted as
truncation, sampler and learner log-probs, a multi-turn calculator rollout in the tagged form (all in
`make test`, about 30 s), and `grpo preflight` (the real-model tier, slow).

Greedy completions are fixed by the checkpoint; the prompts below were chosen for what SmolLM2 answers.
"""

from __future__ import annotations

import subprocess

import pytest
import torch

from conftest import GRPO, REAL_MODEL
from few_shot_calculator import SYSTEM
from grpo_cli.algo.loss import loss_mask
from grpo_cli.compose import compose
from grpo_cli.data import Example
from grpo_cli.data.loaders import load_examples
from grpo_cli.data.prompts import chat_text, encode_prompt, format_prompt
from grpo_cli.environment import open_environments
from grpo_cli.models import load_model
from grpo_cli.monitoring.metrics import completion_metrics
from grpo_cli.sampler import build_sampler
from grpo_cli.training.learner import PAD_ID, Learner, RolloutBatch
from grpo_cli.training.rollout import final_texts, sample_groups
from grpo_cli.verifier import build_verifier
from grpo_cli.verifier.score import Score
from smollm2 import END_OF_TURN, LONG_QUESTION, SHORT_ANSWER, SHORT_QUESTION

pytestmark = pytest.mark.real_model

DEFAULT_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
SETTINGS = [f"model.name_or_path={REAL_MODEL}", "model=hf", "model.dtype=float32", "data.use_chat_template=true",
            "verifier.num_workers=1", "sampler.max_new_tokens=24"]


@pytest.fixture(scope="module")
def config(real_model):
    return compose(SETTINGS)


@pytest.fixture(scope="module")
def learner(config):
    """A learner around the checkpoint (no step is taken: the policy stays the checkpoint)."""
    return Learner(config, load_model(config.model), total_steps=1)


@pytest.fixture(scope="module")
def sampler(config, learner, real_tokenizer):
    return build_sampler(config, learner.policy, real_tokenizer)


def test_the_chat_template_with_its_default_system_prompt_and_with_ours(config, real_tokenizer):
    example = Example("q", "What is 2 + 3?", "5")
    text = format_prompt(example, real_tokenizer, config.data)
    assert text == DEFAULT_SYSTEM + "<|im_start|>user\nWhat is 2 + 3?\n<|im_end|>\n<|im_start|>assistant\n"
    ids = encode_prompt(example, real_tokenizer, config.data)
    # The template writes the special tokens, each one token, none added again by the tokenizer.
    assert ids[0] == real_tokenizer.bos_token_id and ids.count(real_tokenizer.bos_token_id) == 3 and ids.count(END_OF_TURN) == 2
    assert real_tokenizer.decode(ids) == text
    # A conversational prompt (an environment's reset) with a system message: it replaces the default one.
    messages = [{"role": "system", "content": "Answer with FINAL: <number>."}, {"role": "user", "content": "What is 2 + 3?"}]
    assert chat_text(messages, real_tokenizer) == (
        "<|im_start|>system\nAnswer with FINAL: <number>.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # The same as a dataset's conversational prompt column: rendered through the template, the system kept.
    conversation = Example("c", messages, "5")
    expected = chat_text(messages, real_tokenizer)
    assert format_prompt(conversation, real_tokenizer, config.data) == expected
    assert real_tokenizer.decode(encode_prompt(conversation, real_tokenizer, config.data)) == expected


@pytest.fixture(scope="module")
def short_and_long(config, real_tokenizer, sampler):
    """Greedy completions of a question SmolLM2 answers in a few tokens and of one it answers at length, sampled
    in one batch (the shorter prompt left-padded with the pad token, which is also the EOS)."""
    questions = [SHORT_QUESTION, LONG_QUESTION]
    prompts = [encode_prompt(Example(str(i), q, ""), real_tokenizer, config.data) for i, q in enumerate(questions)]
    assert len(prompts[0]) != len(prompts[1])
    groups = sampler.generate(prompts, n=1, seed=0, temperature=0.0)
    return prompts, [group[0] for group in groups]


def test_a_completion_ends_at_the_end_of_turn_token_and_is_not_truncated(short_and_long, sampler):
    prompts, (short, long) = short_and_long
    assert short.text == SHORT_ANSWER and short.token_ids[-1] == END_OF_TURN and short.finish_reason == "stop"
    assert END_OF_TURN not in short.token_ids[:-1] and len(short.logprobs) == len(short.token_ids)
    assert long.finish_reason == "length" and len(long.token_ids) == 24 and END_OF_TURN not in long.token_ids
    scores = [Score(0.0, False, None, "no_answer")] * 2
    assert completion_metrics([short], scores[:1])["completions/truncated_frac"] == 0.0
    assert completion_metrics([short, long], scores)["completions/truncated_frac"] == 0.5
    # Alone, without the batch's padding, each prompt gets the same completion: padding is not read as EOS.
    for prompt, batched in zip(prompts, (short, long)):
        [[alone]] = sampler.generate([prompt], n=1, seed=0, temperature=0.0)
        assert alone.token_ids == batched.token_ids
        torch.testing.assert_close(torch.tensor(alone.logprobs), torch.tensor(batched.logprobs), rtol=0, atol=1e-4)


def test_the_end_of_turn_token_is_in_the_loss_and_padding_is_not(short_and_long, learner):
    prompts, (short, long) = short_and_long
    batch = RolloutBatch.build(prompts, [[short], [long]], torch.tensor([1.0, -1.0]))
    n = len(short.token_ids)
    assert batch.completion_ids[0, n - 1] == END_OF_TURN and batch.completion_mask[0, n - 1]
    assert batch.completion_mask[0].sum() == n and batch.completion_mask[1].all()
    # Padding is a different id from the EOS here, and attended by nothing.
    padded = batch.attention_mask == 0
    assert padded.any() and (batch.input_ids[padded] == PAD_ID).all() and PAD_ID != END_OF_TURN
    assert batch.truncated.tolist() == [False, True]
    assert loss_mask(batch.completion_mask, batch.truncated, learner.algorithm)[0, n - 1]
    algorithm = compose([*SETTINGS, "algorithm.mask_truncated=true"]).algorithm
    assert loss_mask(batch.completion_mask, batch.truncated, algorithm).sum(dim=1).tolist() == [n, 0]
    # The learner scores the EOS as the sampler drew it; padding scores 0.
    logprobs = learner.policy_logprobs(batch)
    assert abs(logprobs[0, n - 1] - short.logprobs[-1]) < 1e-4 and (logprobs[0, n:] == 0).all()


@pytest.mark.parametrize("sampling", [["sampler.temperature=0.7"], ["sampler.temperature=0.9", "sampler.top_p=0.9"]],
                         ids=["T0.7", "T0.9-top_p0.9"])
def test_sampler_and_learner_log_probs_agree_in_float32(sampling, real_tokenizer, learner):
    config = compose([*SETTINGS, *sampling])
    learner = Learner(config, learner.policy, total_steps=1)  # the same weights, this temperature and truncation
    sampler = build_sampler(config, learner.policy, real_tokenizer)
    examples = load_examples(config, "train")[:3]
    prompts = [encode_prompt(example, real_tokenizer, config.data) for example in examples]
    assert len({len(prompt) for prompt in prompts}) > 1  # left padding in the sampler's batch
    groups = sampler.generate(prompts, n=4, seed=1)
    batch = RolloutBatch.build(prompts, groups, torch.zeros(12))
    diff = (learner.policy_logprobs(batch) - batch.sampler_logprobs).abs()[batch.completion_mask]
    print(f"transformers sampler vs learner ({' '.join(sampling)}), {diff.numel()} tokens: "
          f"mean {diff.mean():.2e}, max {diff.max():.2e} nats")
    assert diff.max() < 1e-4


def test_a_multi_turn_calculator_rollout_in_the_tagged_form(real_tokenizer, learner, sampler):
    config = compose([*SETTINGS, "sampler.max_new_tokens=32", "environment.name=custom",
                      "environment.factory=few_shot_calculator:make", "environment.max_turns=3",
                      "data.prompt_template='{prompt}'"])
    assert config.environment.tool_format == "auto"
    example = Example("jars", "A crate holds 24 jars. How many jars do 15 crates hold?", "360")
    with open_environments(config, real_tokenizer) as environments:
        # SmolLM2's template has no tool-call convention: auto falls back to the tagged form.
        assert environments.tool_format == "tagged" and environments.stop == ["</calculator>"]
        sampled = sample_groups(sampler, real_tokenizer, [example], 1, 0, config, environments, temperature=0.0)
    prompt = real_tokenizer.decode(sampled.prompt_ids[0])
    assert prompt.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n") and "SmolLM" not in prompt
    [[rollout]] = sampled.groups
    assert rollout.transcript == [
        {"role": "model", "text": "<calculator>24 * 15</calculator>"},
        {"role": "tool", "tool": "calculator", "input": "24 * 15", "output": "360", "error": False},
        {"role": "model", "text": "FINAL: 360"},
    ]
    # The second turn ends at the end-of-turn token: the rollout stopped, it was not cut.
    assert rollout.finish_reason == "stop" and rollout.token_ids[-1] == END_OF_TURN
    observation = [token for token, by_model in zip(rollout.token_ids, rollout.model_mask) if not by_model]
    assert real_tokenizer.decode(observation) == "\n<output>360</output>\n"
    assert all(lp == 0.0 for lp, by_model in zip(rollout.logprobs, rollout.model_mask) if not by_model)
    with build_verifier(config.verifier) as verifier:
        [score] = verifier.score(final_texts([rollout]), ["360"])
    assert score.correct
    # The learner scores the model's tokens of both turns as the sampler drew them, the tool's not at all.
    batch = RolloutBatch.build(sampled.prompt_ids, sampled.groups, torch.zeros(1))
    assert batch.completion_mask[0].tolist()[: len(rollout.token_ids)] == rollout.model_mask
    diff = (learner.policy_logprobs(batch) - batch.sampler_logprobs).abs()[batch.completion_mask]
    assert diff.max() < 1e-4


@pytest.mark.slow
def test_preflight_on_smollm2():
    result = subprocess.run(
        [GRPO, "preflight", *SETTINGS, "preflight.num_prompts=4", "algorithm.group_size=2", "sampler.temperature=0.9",
         "data.difficulty=[1]", "train.prompts_per_step=4", "train.max_steps=10", "eval.num_prompts=8",
         "data.prompt_template='{prompt} Answer with FINAL: <number>.'"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "preflight: 4 training prompts x G=2"
    rows = {line[:33].strip(): line[33:].split()[0] for line in lines[1:7]}
    assert set(rows) == {"groups with a positive reward", "zero-variance groups", "mean reward", "parse failures",
                         "mean length", "truncated"}
    # SmolLM2 writes more than 24 tokens for these questions: every completion is cut, and preflight says so.
    assert (rows["mean length"], rows["truncated"]) == ("24.0", "100.0%")
    assert "  fix: 100% of completions hit sampler.max_new_tokens=24: raise it (a cut-off completion has no final answer)" in lines
    # The learner phase holds at least the float32 weights and their gradients: 2 x 134.5M x 4 bytes = 1.0 GiB.
    [learn] = [line.split() for line in lines if line.lstrip().startswith("learn ")]
    assert float(learn[learn.index("memory") + 1]) > 1.0
    assert any(line.startswith("  projected run: 10 steps x ") for line in lines)
