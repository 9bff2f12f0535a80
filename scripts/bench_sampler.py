"""Overhead of VLLMSampler over a bare `LLM.generate` on the same engine (target: at most 5%).

    .venv/bin/python scripts/bench_sampler.py --random-tiny                  # CPU, nothing to prepare
    .venv/bin/python scripts/bench_sampler.py model=hf model.name_or_path=DIR sampler.max_new_tokens=256

The same requests (P prompts x n completions, same sampling settings) go through `sampler.generate` and
through `llm.generate(prompts, SamplingParams(n=n, ...))`, alternating so that load from other processes
hits both alike; each side's best round of generated tokens/s is compared:
    ratio = ours / bare,   overhead = 1 - ratio.
It also prints the share of our call spent outside LLM.generate, our own cost measured directly.

--lora compares the two ways of getting a LoRA policy into the engine, per optimizer step:
    merged   (what VLLMSampler does) sync_weights of W + (alpha/r) B A into the plain engine
    vllm     the adapter saved to /dev/shm and loaded by a LoRA-enabled engine (LoRARequest, load_inplace)
printing the seconds to push one update and the tokens/s of generating with it. The two engines run one
after the other in this process.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from vllm import LLM
from vllm.inputs import TokensPrompt
from vllm.lora.request import LoRARequest

from grpo_cli.compose import compose
from grpo_cli.config import Config
from grpo_cli.models import build_tiny_model, build_tokenizer, load_model, load_tokenizer
from grpo_cli.sampler.vllm import VLLMSampler, torch_threads
from grpo_cli.training.learner import add_lora

WORDS = "ship crate harbor pallet weighs remain how many then more total each".split()


def random_tiny_model(config: Config, directory: Path) -> None:
    """A random Llama of shape model.tiny and a tokenizer trained on synthetic sums, saved to `directory`."""
    texts = [f"{WORDS[a % len(WORDS)]} {a} + {b} = {a + b}" for a in range(200) for b in range(10)]
    tokenizer = build_tokenizer(texts, config.model.tiny.vocab_size, config.model.tiny.max_position_embeddings)
    build_tiny_model(config.model.tiny, tokenizer, seed=0).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def prompts_for(tokenizer, count: int) -> list[list[int]]:
    return [tokenizer(f"{WORDS[i % len(WORDS)]} {i} + {i % 7} =")["input_ids"] for i in range(count)]


def tokens_per_second(generate) -> float:
    start = time.perf_counter()
    num_tokens = generate()
    return num_tokens / (time.perf_counter() - start)


def bench_overhead(sampler: VLLMSampler, prompt_ids: list[list[int]], n: int, rounds: int) -> None:
    settings = sampler.config
    # One SamplingParams for every prompt, as a plain user would write it; ours builds one per prompt.
    bare_params = sampler.sampling_params(n, seed=0, temperature=settings.temperature, max_tokens=settings.max_new_tokens)
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids]
    engine_generate = sampler.llm.generate
    # Our call's own cost is its time outside the engine: insensitive to load from other processes.
    engine_seconds = []

    def timed_engine_generate(*args, **kwargs):
        start = time.perf_counter()
        outputs = engine_generate(*args, **kwargs)
        engine_seconds.append(time.perf_counter() - start)
        return outputs

    sampler.llm.generate = timed_engine_generate
    ours_seconds = []

    def ours() -> int:
        start = time.perf_counter()
        groups = sampler.generate(prompt_ids, n=n, seed=0)
        ours_seconds.append(time.perf_counter() - start)
        return sum(len(c.token_ids) for group in groups for c in group)

    def bare() -> int:
        # With the torch threads vLLM chose for serving, as in a process where only vLLM runs.
        with torch_threads(sampler.engine_threads):
            outputs = engine_generate(prompts, bare_params, use_tqdm=False)
        return sum(len(sample.token_ids) for output in outputs for sample in output.outputs)

    ours(), bare()  # warm-up
    ours_tps, bare_tps = [], []
    for round_ in range(rounds):
        # Alternate which goes first, so a slow spell on the machine does not always hit the same side.
        for name in ("ours", "bare") if round_ % 2 == 0 else ("bare", "ours"):
            if name == "ours":
                ours_tps.append(tokens_per_second(ours))
            else:
                bare_tps.append(tokens_per_second(bare))
    # Other processes only ever slow a round down, so each side's fastest round is its least disturbed one.
    ratio = max(ours_tps) / max(bare_tps)
    outside = sum(ours_seconds[1:]) - sum(engine_seconds[1:])
    print(f"requests: {len(prompt_ids)} prompts x n={n}, max_new_tokens={settings.max_new_tokens}, {rounds} rounds")
    for name, tps in (("bare LLM.generate   ", bare_tps), ("VLLMSampler.generate", ours_tps)):
        rounds_text = ", ".join(f"{t:.0f}" for t in tps)
        print(f"{name}  best {max(tps):9.1f} tokens/s  median {statistics.median(tps):9.1f}  (rounds: {rounds_text})")
    print(f"ratio ours/bare (best rounds) = {ratio:.3f}   overhead = {100 * (1 - ratio):.1f}%   (target: <= 5%)")
    print(
        f"time in VLLMSampler.generate outside LLM.generate: {100 * outside / sum(ours_seconds[1:]):.2f}% "
        f"({1000 * outside / rounds:.1f} ms per call)"
    )


def perturb_adapter(model) -> None:
    """Stand-in for an optimizer step: move every adapter matrix."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.add_(0.01 * torch.randn_like(parameter))


def bench_lora(config: Config, model, tokenizer, prompt_ids: list[list[int]], n: int, rounds: int) -> None:
    model = add_lora(model, config.model.lora)
    sampler = VLLMSampler(config, model, tokenizer, model.dtype)
    merged_sync_s, merged_tps = [], []
    for _ in range(rounds):
        perturb_adapter(model)
        start = time.perf_counter()
        sampler.sync_weights(model)
        merged_sync_s.append(time.perf_counter() - start)
        merged_tps.append(
            tokens_per_second(lambda: sum(len(c.token_ids) for g in sampler.generate(prompt_ids, n, seed=0) for c in g))
        )
    settings = config.sampler
    params = [
        sampler.sampling_params(n, seed=i * n, temperature=settings.temperature, max_tokens=settings.max_new_tokens)
        for i in range(len(prompt_ids))
    ]
    sampler.close()

    lora = config.model.lora
    llm = LLM(
        model=config.model.name_or_path,
        dtype=str(model.dtype).removeprefix("torch."),
        seed=config.train.seed,
        gpu_memory_utilization=config.sampler.gpu_memory_utilization,
        kv_cache_memory_bytes=None if config.sampler.kv_cache_gb is None else int(config.sampler.kv_cache_gb * 2**30),
        max_model_len=min(config.sampler.max_model_len, model.config.max_position_embeddings),
        logprobs_mode="processed_logprobs",
        skip_tokenizer_init=True,
        generation_config="vllm",
        enable_lora=True,
        max_lora_rank=lora.rank,
    )
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids]
    vllm_sync_s, vllm_tps = [], []
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        for _ in range(rounds):
            perturb_adapter(model)
            start = time.perf_counter()
            model.save_pretrained(shm)
            request = LoRARequest("policy", 1, shm, load_inplace=True)
            llm.llm_engine.add_lora(request)
            vllm_sync_s.append(time.perf_counter() - start)

            def generate() -> int:
                outputs = llm.generate(prompts, params, lora_request=request, use_tqdm=False)
                return sum(len(sample.token_ids) for output in outputs for sample in output.outputs)

            vllm_tps.append(tokens_per_second(generate))
    print(f"LoRA rank {lora.rank} on {', '.join(lora.target_modules)}; {rounds} updates (first includes warm-up)")
    print(f"merged into the engine  sync {statistics.median(merged_sync_s):.4f} s   generate {statistics.median(merged_tps):10.1f} tokens/s")
    print(f"vLLM LoRA adapter       sync {statistics.median(vllm_sync_s):.4f} s   generate {statistics.median(vllm_tps):10.1f} tokens/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random-tiny", action="store_true", help="bench a random model.tiny built in a temp dir")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=8, help="completions per prompt (the group size)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--lora", action="store_true", help="compare merged-weight sync with vLLM's LoRA adapters")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.name_or_path=DIR")
    args = parser.parse_args()

    config = compose(["sampler=vllm", "model.dtype=float32", "sampler.max_new_tokens=64", *args.overrides])
    with tempfile.TemporaryDirectory() as tmp:
        if args.random_tiny:
            random_tiny_model(config, Path(tmp))
            config.model.name_or_path = tmp
        model, tokenizer = load_model(config.model), load_tokenizer(config.model.name_or_path)
        prompt_ids = prompts_for(tokenizer, args.prompts)
        if args.lora:
            bench_lora(config, model, tokenizer, prompt_ids, args.n, args.rounds)
        else:
            bench_overhead(VLLMSampler(config, model, tokenizer, model.dtype), prompt_ids, args.n, args.rounds)


if __name__ == "__main__":
    main()
