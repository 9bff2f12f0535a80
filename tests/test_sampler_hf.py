"""HFSampler on a real (tiny, random) Llama and a tokenizer trained here with `tokenizers`."""

from __future__ import annotations

import json

import pytest
import torch

from grpo_cli.config import Config, ModelConfig, SamplerConfig, TinyModelConfig
from grpo_cli.models import build_tiny_model, build_tokenizer, load_model, load_tokenizer
from grpo_cli.sampler import build_sampler
from grpo_cli.sampler.hf import HFSampler, plain_generation_config, sequence_bytes
from grpo_cli.training.learner import RolloutBatch, completion_logprobs

TEXTS = [
    "The harbor holds 12 crates and ships 5 of them. How many remain?\n12 - 5 = 7\nFINAL: 7",
    "A pallet weighs 3/4 ton. What do 8 pallets weigh?\n8 * 3/4 = 6\nFINAL: 6",
]
PROMPTS = ["The harbor holds 12 crates", "A pallet weighs", "How many remain? 8 * 3/4 ="]
TINY = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=1, intermediate_size=128, vocab_size=300, max_position_embeddings=128)


def tiny_model(tokenizer, eos_bias: float = 0.0):
    """Random weights; `eos_bias` is added to the EOS logit at every step (P(EOS) ~ e^b / (e^b + vocab))."""
    model = build_tiny_model(TINY, tokenizer, seed=0)
    if eos_bias:
        head = torch.nn.Linear(TINY.hidden_size, len(tokenizer), bias=True)
        head.weight.data.copy_(model.lm_head.weight.data)
        head.bias.data.zero_()
        head.bias.data[tokenizer.eos_token_id] = eos_bias
        model.lm_head = head
    return model


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(TEXTS * 20, vocab_size=TINY.vocab_size, max_length=TINY.max_position_embeddings)


@pytest.fixture(scope="module")
def prompt_ids(tokenizer):
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    assert len({len(p) for p in ids}) == 3  # different lengths, so left padding is exercised
    return ids


def forward_logprobs(model, prompt: list[int], completion: list[int], temperature: float) -> torch.Tensor:
    """log_softmax(logits / T) at each completion token, from one unpadded forward pass."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1]
    return torch.log_softmax(logits / temperature, dim=-1).gather(-1, torch.tensor(completion)[:, None])[:, 0]


def max_logprob_error(model, prompt_ids, groups, temperature: float) -> float:
    errors = [
        (forward_logprobs(model, prompt, c.token_ids, temperature) - torch.tensor(c.logprobs)).abs().max().item()
        for prompt, group in zip(prompt_ids, groups)
        for c in group
    ]
    return max(errors)


def truncated_logprobs(model, prompt: list[int], completion: list[int], temperature: float, top_k: int, top_p: float):
    """By hand: the k most likely tokens, then the most likely of those while the mass above them is < top_p,
    renormalized; the log-prob of each completion token under that distribution."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1]
    result = []
    for row, token in zip(logits, completion):
        probs, order = torch.softmax(row / temperature, dim=-1).sort(descending=True)
        probs = probs[:top_k] / probs[:top_k].sum()
        kept = (probs.cumsum(0) - probs) < top_p
        kept_probs = probs[kept] / probs[kept].sum()
        position = order[:top_k][kept].tolist().index(token)
        result.append(kept_probs[position].log().item())
    return torch.tensor(result)


def test_logprobs_are_the_truncated_distributions_and_the_learner_computes_the_same(tokenizer, prompt_ids):
    model = tiny_model(tokenizer)
    # 3 prompts x 4 = 12 sequences in batches of 5: padding differs per batch.
    config = SamplerConfig(temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=10, batch_size=5)
    groups = HFSampler(model, tokenizer, config).generate(prompt_ids, n=4, seed=3)
    assert [len(g) for g in groups] == [4, 4, 4]
    assert all(len(c.token_ids) == len(c.logprobs) for g in groups for c in g)
    # The log-probs are those of the distribution each token was drawn from: temperature, top-k, top-p,
    # renormalized; the full softmax's are lower by -log(kept mass).
    gaps = []
    for prompt, group in zip(prompt_ids, groups):
        for c in group:
            expected = truncated_logprobs(model, prompt, c.token_ids, 0.7, top_k=20, top_p=0.9)
            torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=1e-5, rtol=0)
            gaps.append((expected - forward_logprobs(model, prompt, c.token_ids, 0.7)).min())
    assert min(gaps) > 0.1
    # The learner's log-probs of the same tokens, over the same support, agree token by token.
    batch = RolloutBatch.build(prompt_ids, groups, torch.zeros(12))
    learner_logp, _ = completion_logprobs(model, batch, 0.7, top_k=20, top_p=0.9)
    mismatch = (learner_logp - batch.sampler_logprobs).abs().masked_fill(~batch.completion_mask, 0.0)
    assert mismatch.max() < 1e-5


def test_top_k_1_is_greedy_and_greedy_logprobs_use_temperature_1(tokenizer, prompt_ids):
    model = tiny_model(tokenizer)
    config = SamplerConfig(temperature=0.5, top_k=1, max_new_tokens=6, batch_size=8)
    sampler = HFSampler(model, tokenizer, config)
    top1 = sampler.generate(prompt_ids, n=2, seed=0)
    greedy = sampler.generate(prompt_ids, n=2, seed=1, temperature=0.0)
    for prompt, top1_group, greedy_group in zip(prompt_ids, top1, greedy):
        assert greedy_group[0].token_ids == greedy_group[1].token_ids == top1_group[0].token_ids
        with torch.no_grad():
            logits = model(torch.tensor([prompt + greedy_group[0].token_ids])).logits[0, len(prompt) - 1 : -1]
        assert greedy_group[0].token_ids == logits.argmax(-1).tolist()
    assert max_logprob_error(model, prompt_ids, greedy, temperature=1.0) < 1e-5
    assert all(logprob == 0.0 for group in top1 for c in group for logprob in c.logprobs)  # one token kept


def test_certain_eos_stops_after_one_token(tokenizer, prompt_ids):
    model = tiny_model(tokenizer, eos_bias=1e4)
    groups = HFSampler(model, tokenizer, SamplerConfig(max_new_tokens=5)).generate(prompt_ids, n=2, seed=0)
    for completion in (c for g in groups for c in g):
        assert completion.token_ids == [tokenizer.eos_token_id]
        assert completion.finish_reason == "stop"
        assert completion.text == ""
        assert completion.logprobs == pytest.approx([0.0], abs=1e-6)


def test_finish_reasons_when_some_stop_and_some_hit_the_length_cap(tokenizer, prompt_ids):
    # eos_bias 4.5: P(EOS) ~ 90 / (90 + 303) ~ 0.23 per step, so within 6 tokens some stop and some don't.
    model = tiny_model(tokenizer, eos_bias=4.5)
    config = SamplerConfig(max_new_tokens=6, batch_size=16)
    groups = HFSampler(model, tokenizer, config).generate(prompt_ids, n=8, seed=0)
    completions = [c for g in groups for c in g]
    eos = tokenizer.eos_token_id
    stopped = [c for c in completions if c.finish_reason == "stop"]
    capped = [c for c in completions if c.finish_reason == "length"]
    assert stopped and capped
    for c in stopped:  # EOS kept once, at the end; the padding generate adds after it is dropped
        assert c.token_ids[-1] == eos and eos not in c.token_ids[:-1] and len(c.token_ids) <= 6
    assert any(len(c.token_ids) < 6 for c in stopped)
    for c in capped:
        assert len(c.token_ids) == 6 and eos not in c.token_ids
    assert max_logprob_error(model, prompt_ids, groups, temperature=1.0) < 1e-5


def test_same_seed_same_completions_and_training_state_untouched(tokenizer, prompt_ids):
    model = tiny_model(tokenizer)
    model.train()
    sampler = HFSampler(model, tokenizer, SamplerConfig(max_new_tokens=8, batch_size=4))
    rng_before = torch.get_rng_state()
    first = sampler.generate(prompt_ids, n=3, seed=7)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert model.training
    assert sampler.generate(prompt_ids, n=3, seed=7) == first
    other = sampler.generate(prompt_ids, n=3, seed=8)
    assert [c.token_ids for g in other for c in g] != [c.token_ids for g in first for c in g]


def test_sync_weights_samples_from_the_new_model(tokenizer, prompt_ids):
    sampler = HFSampler(tiny_model(tokenizer), tokenizer, SamplerConfig(max_new_tokens=3))
    sampler.sync_weights(tiny_model(tokenizer, eos_bias=1e4))
    groups = sampler.generate(prompt_ids, n=1, seed=0)
    assert all(g[0].token_ids == [tokenizer.eos_token_id] for g in groups)


def test_build_sampler_picks_hf(tokenizer):
    config = Config.from_dict({"sampler": {"name": "hf", "top_k": 7}})
    sampler = build_sampler(config, tiny_model(tokenizer), tokenizer)
    assert isinstance(sampler, HFSampler) and sampler.config.top_k == 7


def test_samples_from_a_peft_lora_model(tokenizer, prompt_ids):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    policy = get_peft_model(tiny_model(tokenizer), lora)
    policy.train()
    groups = HFSampler(policy, tokenizer, SamplerConfig(temperature=0.9, max_new_tokens=6)).generate(prompt_ids, n=2, seed=0)
    assert policy.training
    assert max_logprob_error(policy, prompt_ids, groups, temperature=0.9) < 1e-5


def test_the_models_generation_config_is_ignored(tokenizer, prompt_ids, tmp_path):
    plain = tiny_model(tokenizer)
    plain.save_pretrained(tmp_path)
    # A generation_config.json with everything that would reshape the distribution the learner assumes.
    (tmp_path / "generation_config.json").write_text(json.dumps({
        "do_sample": False, "repetition_penalty": 3.0, "top_k": 2, "top_p": 0.5, "min_p": 0.2,
        "no_repeat_ngram_size": 1, "temperature": 0.3, "suppress_tokens": list(range(100, 200)),
        "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
    }))
    configured = load_model(ModelConfig(name_or_path=str(tmp_path), dtype="float32", device="cpu"))
    assert configured.generation_config.min_p == 0.2
    config = SamplerConfig(temperature=1.0, max_new_tokens=12, batch_size=6)
    expected = HFSampler(plain, tokenizer, config).generate(prompt_ids, n=2, seed=5)
    groups = HFSampler(configured, tokenizer, config).generate(prompt_ids, n=2, seed=5)
    assert groups == expected
    assert max_logprob_error(configured, prompt_ids, groups, temperature=1.0) < 1e-5
    assert configured.generation_config.min_p == 0.2  # put back after sampling


@pytest.fixture
def tiny_model_dir(request):
    """conftest's tiny_model (512 positions), a name this module's helper `tiny_model` shadows."""
    return request.getfixturevalue("tiny_model")


def test_new_tokens_are_capped_at_the_models_context(tiny_model_dir):
    model = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    tokenizer = load_tokenizer(str(tiny_model_dir))
    assert model.config.max_position_embeddings == 512
    # No EOS ever: every completion runs to the cap.
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    head.weight.data.copy_(model.lm_head.weight.data)
    head.bias.data.zero_()
    head.bias.data[tokenizer.eos_token_id] = -1e4
    model.lm_head = head
    prompts = [tokenizer("Ship 12 crates, then 5 more. How many?")["input_ids"], tokenizer("7 + 8 =")["input_ids"]]
    sampler = HFSampler(model, tokenizer, SamplerConfig(max_new_tokens=512, batch_size=2))
    with pytest.warns(UserWarning, match=r"sampler.max_new_tokens=512 .* 512 positions \(max_position_embeddings\)"):
        groups = sampler.generate(prompts, n=1, seed=0)
    longest = max(len(p) for p in prompts)  # one left-padded batch: the longest prompt sets the room left
    for group in groups:
        assert len(group[0].token_ids) == 512 - longest and group[0].finish_reason == "length"


def unshared_generate(sampler: HFSampler, prompts: list[list[int]], n: int, seed: int, temperature: float):
    """What the sampler computes without the shared prefill: one plain generate over the prompts' n left-padded
    copies (all of them one batch), with the sampler's generation settings and seed, the log-probs from the
    scores of every step that generate keeps when asked."""
    width = max(len(ids) for ids in prompts)
    rows = [ids for ids in prompts for _ in range(n)]
    input_ids = torch.tensor([[sampler.pad_token_id] * (width - len(ids)) + ids for ids in rows])
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in rows])
    generation_config = sampler.generation_config(temperature, sampler.config.max_new_tokens)
    generation_config.update(output_scores=True, return_dict_in_generate=True)
    with torch.no_grad(), torch.random.fork_rng(), plain_generation_config(sampler.model):
        torch.manual_seed(seed)
        output = sampler.model.eval().generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config,
            logits_processor=sampler.sampling_processors(temperature),
        )
    tokens = output.sequences[:, width:]
    logprobs = torch.stack([torch.log_softmax(s, -1).gather(-1, t[:, None])[:, 0] for s, t in zip(output.scores, tokens.T)], 1)
    return [sampler._completion(t.tolist(), lp.tolist()) for t, lp in zip(tokens, logprobs)]


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_the_shared_prompt_prefill_samples_what_the_unshared_generate_does(tokenizer, prompt_ids, temperature):
    model = tiny_model(tokenizer)
    sampler = HFSampler(model, tokenizer, SamplerConfig(temperature=temperature, top_k=30, max_new_tokens=10, batch_size=12))
    shared = [c for group in sampler.generate(prompt_ids, n=4, seed=11) for c in group]
    unshared = unshared_generate(sampler, prompt_ids, 4, 11, temperature)
    assert [c.token_ids for c in shared] == [c.token_ids for c in unshared]
    assert len({tuple(c.token_ids) for c in shared}) > (1 if temperature == 0 else 6)  # prompts differ; sampled copies too
    # The same tokens; log-probs equal up to float rounding (the prompt's last token is computed apart).
    for ours, theirs in zip(shared, unshared):
        assert ours.finish_reason == theirs.finish_reason
        torch.testing.assert_close(torch.tensor(ours.logprobs), torch.tensor(theirs.logprobs), atol=1e-5, rtol=0)


def test_groups_come_back_whole_and_in_order_through_on_groups(tokenizer, prompt_ids):
    model = tiny_model(tokenizer)
    # batch 8 with n=4: two groups per call; batch 3 with n=4: each group in two pieces (3 + 1).
    for batch_size, calls in [(8, 2), (3, 3)]:
        sampler = HFSampler(model, tokenizer, SamplerConfig(max_new_tokens=5, batch_size=batch_size))
        finished = []
        groups = sampler.generate(prompt_ids, n=4, seed=2, on_groups=finished.append)
        assert len(finished) == calls and [g for batch in finished for g in batch] == groups
        assert [len(g) for g in groups] == [4, 4, 4]


def test_sequence_bytes_by_hand_and_the_automatic_batch_fits_the_free_memory(tokenizer, prompt_ids, monkeypatch):
    model = tiny_model(tokenizer)
    # 2 layers x 1 KV head x 64 dims x (K and V) x (7 + 10 positions) x 4 bytes, and 4 float32 rows of 300 scores
    # (one step's logits, scores and probabilities, the previous step's log-softmax), whatever the new tokens.
    assert sequence_bytes(model.config, 7, 10, 4) == 2 * 2 * 1 * 64 * 17 * 4 + 4 * 300 * 4
    assert sequence_bytes(model.config, 7, 1000, 4) == 2 * 2 * 1 * 64 * 1007 * 4 + 4 * 300 * 4
    sampler = HFSampler(model, tokenizer, SamplerConfig(max_new_tokens=10, batch_size=None))
    width = max(len(ids) for ids in prompt_ids)
    per_sequence = sequence_bytes(model.config, width, 10, 4)
    pages = {"SC_AVPHYS_PAGES": 5 * per_sequence * 2 // 4096 + 1, "SC_PAGE_SIZE": 4096}  # half is 5 sequences' worth
    monkeypatch.setattr("os.sysconf", pages.__getitem__)
    assert sampler.automatic_batch_size(prompt_ids) == 5
    groups = sampler.generate(prompt_ids, n=2, seed=0)  # 2 groups (4 sequences) per call, then 1
    assert [len(g) for g in groups] == [2, 2, 2]
