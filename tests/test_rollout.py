"""Multi-turn rollouts with the HF sampler and the tiny model: stop strings, the token layout and masks, the
sampler's log-probs of model tokens against the learner's token by token, budgets, the chat-template form,
and a short training run with environment=calculator.

The model is random, so it would almost never write a tool call; its tokenizer has the calculator's tags as
single tokens, and a bias on their logits (an lm_head with a bias, as in test_sampler_hf.py) makes it call.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import grpo_cli.training.trainer
from conftest import TINY_RUN
from grpo_cli.compose import compose
from grpo_cli.config import TinyModelConfig
from grpo_cli.data import Example
from grpo_cli.environment import open_environments
from grpo_cli.models import build_tiny_model, build_tokenizer
from grpo_cli.sampler.base import Completion
from grpo_cli.sampler.hf import HFSampler
from grpo_cli.training.learner import RolloutBatch, completion_logprobs
from grpo_cli.training.rollout import env_metrics, final_texts, sample_groups, with_environment_rewards
from grpo_cli.training.trainer import train
from grpo_cli.verifier.score import Score

TINY = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=1, intermediate_size=128, vocab_size=300, max_position_embeddings=512)
TEXTS = ["The harbor holds 12 + 30 crates. <calculator>12 + 30</calculator>\n<output>42</output>\nFINAL: 42"] * 40
EXAMPLES = [Example(id="a", question="The harbor holds 12 + 30 crates.", answer="42"), Example(id="b", question="2 + 3?", answer="5")]
TAGS = ["<calculator>", "</calculator>"]


def biased_model(tokenizer, biases: dict[str, float], positions: int = TINY.max_position_embeddings):
    """Random weights, plus `biases` on the logits of the given (single-token) strings at every step."""
    model = build_tiny_model(dataclasses.replace(TINY, max_position_embeddings=positions), tokenizer, seed=0)
    head = torch.nn.Linear(TINY.hidden_size, len(tokenizer), bias=True)
    head.weight.data.copy_(model.lm_head.weight.data)
    head.bias.data.zero_()
    for text, bias in biases.items():
        (token,) = tokenizer(text, add_special_tokens=False)["input_ids"]
        head.bias.data[token] = bias
    model.lm_head = head
    return model


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = build_tokenizer(TEXTS, vocab_size=TINY.vocab_size, max_length=TINY.max_position_embeddings)
    tokenizer.add_tokens(TAGS)
    return tokenizer


@pytest.fixture(scope="module")
def model(tokenizer):
    return biased_model(tokenizer, {"<calculator>": 3.0, "</calculator>": 3.5})


def config_for(*overrides):
    return compose(["environment=calculator", "sampler.max_new_tokens=12", "verifier.num_workers=2", *overrides])


def rollouts(model, tokenizer, *overrides, n=8, seed=1):
    config = config_for(*overrides)
    with open_environments(config, tokenizer) as environments:
        sampled = sample_groups(HFSampler(model, tokenizer, config.sampler), tokenizer, EXAMPLES, n, seed, config, environments)
    return config, sampled


def test_hf_sampler_stops_right_after_a_stop_string(model, tokenizer):
    close = tokenizer.convert_tokens_to_ids("</calculator>")
    sampler = HFSampler(model, tokenizer, config_for().sampler)
    prompt = tokenizer("The harbor")["input_ids"]
    stopped = sampler.generate([prompt], n=16, seed=0, stop=["</calculator>"])[0]
    unstopped = sampler.generate([prompt], n=16, seed=0)[0]
    at_stop = [c for c in stopped if c.finish_reason == "stop"]
    assert len(at_stop) >= 8
    for c, full in zip(stopped, unstopped):
        # The same draws, cut just after the first </calculator>: the prefix up to it is identical.
        if c.finish_reason == "stop":
            assert c.token_ids[-1] == close and close not in c.token_ids[:-1] and c.text.endswith("</calculator>")
            assert full.token_ids[: len(c.token_ids)] == c.token_ids
            assert c.logprobs == pytest.approx(full.logprobs[: len(c.logprobs)], abs=1e-6)
        else:
            assert close not in c.token_ids and len(c.token_ids) == 12


def test_three_turn_rollouts_line_up_with_the_learner_token_by_token(model, tokenizer):
    config, sampled = rollouts(model, tokenizer, "environment.max_turns=3")
    completions = [c for group in sampled.groups for c in group]
    turns = [sum(r["role"] == "model" for r in c.transcript) for c in completions]
    assert max(turns) == 3 and min(turns) >= 1
    for prompt, group in zip(sampled.prompt_ids, sampled.groups):
        assert prompt == tokenizer(config.data.prompt_template.replace("{prompt}", EXAMPLES[sampled.prompt_ids.index(prompt)].question))["input_ids"]
        for c in group:
            assert len(c.token_ids) == len(c.logprobs) == len(c.model_mask) <= config.environment.max_total_tokens
            # The environment's tokens are its rendered observations, tokenized alone, in order.
            env_spans = _spans(c.model_mask, False)
            tools = [r for r in c.transcript if r["role"] == "tool"]
            assert [c.token_ids[a:b] for a, b in env_spans] == [
                tokenizer(f"\n<output>{r['output']}</output>\n", add_special_tokens=False)["input_ids"] for r in tools
            ]
            assert all(c.logprobs[i] == 0.0 for a, b in env_spans for i in range(a, b))
            model_spans = _spans(c.model_mask, True)
            assert [tokenizer.decode(c.token_ids[a:b]) for a, b in model_spans] == [r["text"] for r in c.transcript if r["role"] == "model"]
    three_turn = [c for c in completions if sum(r["role"] == "model" for r in c.transcript) == 3]
    batch = RolloutBatch.build(sampled.prompt_ids, sampled.groups, torch.zeros(len(completions)))
    assert batch.completion_mask.sum().item() == sum(sum(c.model_mask) for c in completions)
    learner_logp, _ = completion_logprobs(model, batch, config.sampler.temperature)
    mismatch = (learner_logp - batch.sampler_logprobs).abs()
    assert mismatch.masked_fill(~batch.completion_mask, 0.0).max() < 1e-5
    # Environment tokens would not line up (the sampler never drew them): that is why they are out of the mask.
    environment = batch.attention_mask[:, -batch.completion_mask.shape[1]:].bool() & ~batch.completion_mask
    assert mismatch[environment].min() > 0.5
    assert three_turn and sampled.env_s > 0


def _spans(mask: list[bool], value: bool) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, bit in enumerate([*mask, not value]):
        if bit == value and start is None:
            start = i
        elif bit != value and start is not None:
            spans.append((start, i))
            start = None
    return spans


def test_turn_and_token_budgets_cut_rollouts(model, tokenizer):
    _, one_turn = rollouts(model, tokenizer, "environment.max_turns=1")
    for c in [c for group in one_turn.groups for c in group]:
        # One turn: a turn that calls the calculator is cut (its call would go unanswered), one that stops
        # otherwise is done; either way nothing of the environment's is in it.
        assert c.model_mask == [True] * len(c.token_ids) and len(c.transcript) == 1
        assert (c.finish_reason == "length") == (c.transcript[0]["text"].endswith("</calculator>") or len(c.token_ids) == 12)
    _, short = rollouts(model, tokenizer, "environment.max_total_tokens=20")
    completions = [c for group in short.groups for c in group]
    assert all(len(c.token_ids) <= 20 for c in completions)
    assert env_metrics(completions)["env/truncated_frac"] == 1.0  # an observation of the calculator is > 8 tokens
    # The model's positions bound a rollout too: prompt + everything after it fits in 80.
    short_context = biased_model(tokenizer, {"<calculator>": 3.0, "</calculator>": 3.5}, positions=80)
    _, bounded = rollouts(short_context, tokenizer, "environment.max_turns=20")
    lengths = [len(prompt) + len(c.token_ids) for prompt, group in zip(bounded.prompt_ids, bounded.groups) for c in group]
    assert max(lengths) <= 80 and all(c.finish_reason == "length" for group in bounded.groups for c in group)
    assert max(len(c.transcript) for group in bounded.groups for c in group) < 20


def test_rollout_batch_masks_environment_tokens_and_micro_batches_keep_the_last_model_tokens():
    completions = [
        Completion([5, 6, 7, 8, 9], [-0.5, -0.6, 0.0, 0.0, -0.9], "t", "stop", model_mask=[True, True, False, False, True]),
        Completion([5, 6], [-0.1, -0.2], "u", "length"),
    ]
    batch = RolloutBatch.build([[1, 2], [3]], [[completions[0]], [completions[1]]], torch.tensor([1.0, -1.0]))
    assert batch.completion_mask.tolist() == [[True, True, False, False, True], [True, True, False, False, False]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 0, 0, 0]]
    assert batch.truncated.tolist() == [False, True]
    rows, first = batch.micro_batches(1)[0]  # one completion per micro-batch, the longest first
    assert rows.tolist() == [0]
    assert first.completion_mask.tolist() == [[True, True, False, False, True]]  # 3 model tokens, 5 columns
    assert first.input_ids.tolist() == [[1, 2, 5, 6, 7, 8, 9]]


def test_chat_template_tool_calls_and_observations(tokenizer):
    from test_environment import QWEN_LIKE_TEMPLATE

    chat = build_tokenizer(TEXTS, vocab_size=TINY.vocab_size, max_length=TINY.max_position_embeddings)
    chat.add_tokens(["<tool_call>", "</tool_call>"])
    chat.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    chat.chat_template = QWEN_LIKE_TEMPLATE
    model = biased_model(chat, {"<tool_call>": 3.0, "</tool_call>": 3.5})
    config, sampled = rollouts(model, chat, "data.use_chat_template=true", "environment.max_turns=3", n=4)
    prompt = chat.decode(sampled.prompt_ids[0])
    assert prompt.startswith("<|im_start|>system\nTools: calculator. Call one as <tool_call>") and prompt.endswith("<|im_start|>assistant\n")
    stepped = [c for group in sampled.groups for c in group if len(c.transcript) > 1]
    assert stepped
    for c in stepped:
        # Each observation is the chat template's rendering of a tool message: it closes the assistant turn
        # that stopped at </tool_call>, answers in a user turn, and opens the next assistant turn.
        tools = [r for r in c.transcript if r["role"] == "tool"]
        assert [chat.decode(c.token_ids[a:b]) for a, b in _spans(c.model_mask, False)] == [
            f"<|im_end|>\n<|im_start|>user\n<tool_response>\n{r['output']}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
            for r in tools
        ]
        assert all(r["text"].endswith("</tool_call>") for r in c.transcript[:-1] if r["role"] == "model")
        assert all(r["error"] for r in tools)  # a random model writes no valid JSON
    assert final_texts(stepped)[0] == [r for r in stepped[0].transcript if r["role"] == "model"][-1]["text"]


def test_a_short_training_run_with_the_calculator(tokenizer, model, tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    monkeypatch.setattr(grpo_cli.training.trainer, "load_model", lambda model_config: biased_model(tokenizer, {"<calculator>": 3.0, "</calculator>": 3.5}))
    config = compose([
        *TINY_RUN, f"model.name_or_path={model_dir}", f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2",
        "environment=calculator", "environment.max_turns=3", "environment.max_total_tokens=96", "sampler.max_new_tokens=12",
        "eval.retention_path=", "data.num_train=40", "data.num_eval=8",
    ])
    train(config)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2
    for step in metrics:
        assert step["env/turns_mean"] > 1.2 and step["env/tool_calls_mean"] > 0.2 and step["env/tool_errors"] > 0
        assert 0 < step["env/truncated_frac"] < 1 and step["time/env_s"] > 0
        assert step["logprob_mismatch/max"] < 1e-4  # environment tokens (log-prob 0 from the sampler) are masked
        assert step["learn/skipped"] == 0.0  # the length penalty makes rewards differ
    group = json.loads((tmp_path / "run" / "samples.jsonl").read_text().splitlines()[0])
    assert len(group["transcripts"]) == 4 and any(len(t) > 1 for t in group["transcripts"])
    assert group["transcripts"][0][0]["role"] == "model"
    evals = [json.loads(line) for line in (tmp_path / "run" / "evals.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 2]
    # The evals sample the same multi-turn rollouts: longer than one turn's 12 tokens on average.
    assert all(e["completions/len_mean"] > 12 for e in evals)


def test_environment_rewards_replace_or_add_to_the_verifiers():
    scores = [Score(reward=1.0, correct=True, extracted="5", reason="correct"), Score.failed("timeout")]
    assert with_environment_rewards(scores, None, "sum") is scores
    summed = with_environment_rewards(scores, [0.5, 0.25], "sum")
    assert [s.reward for s in summed] == [1.5, 0.25] and [s.correct for s in summed] == [True, False]
    assert [s.reward for s in with_environment_rewards(scores, [0.5, 0.25], "environment")] == [0.5, 0.25]
