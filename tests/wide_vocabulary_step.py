"""Run by tests/test_wide_vocabulary.py in a process of its own: one GRPO step (sampling, then learning) with
SmolLM2's 49,152-token vocabulary on a one-layer Llama of hidden size 64, whose vocabulary rows dominate
everything it allocates. Prints, as JSON, the memory each phase adds at its peak and the size of one float32
[completions, new tokens, vocab] tensor of the step.

    python tests/wide_vocabulary_step.py TOKENIZER_DIR

A phase's peak: the process's peak resident set (VmHWM, reset through /proc/self/clear_refs as the phase starts)
less its resident set then. Run it with MALLOC_MMAP_THRESHOLD_ fixed (the test does): glibc otherwise raises
that threshold after the first large free, serves later blocks from its heap and keeps them resident when freed,
so the peak would count memory already given back.
"""

import json
import re
import sys

import torch

from grpo_cli.config import Config, TinyModelConfig
from grpo_cli.models import build_tiny_model, load_tokenizer
from grpo_cli.sampler.hf import HFSampler
from grpo_cli.training.learner import Learner, RolloutBatch

PROMPTS, GROUP_SIZE, NEW_TOKENS = 4, 8, 64
MIB = 2**20


def resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def peak_since_reset() -> int:
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\s+(\d+) kB", status.read()).group(1)) * 1024


def start_phase() -> int:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets VmHWM to the current resident set
    return resident()


def main(tokenizer_dir: str) -> None:
    tokenizer = load_tokenizer(tokenizer_dir)
    tiny = TinyModelConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128, max_position_embeddings=256)
    model = build_tiny_model(tiny, tokenizer, seed=0)
    config = Config()
    config.sampler.temperature = 0.9
    config.sampler.max_new_tokens = NEW_TOKENS
    config.sampler.batch_size = PROMPTS * GROUP_SIZE  # the whole step in one generate call
    config.algorithm.group_size = GROUP_SIZE
    config.algorithm.kl_coef = 0.04  # the reference pass too
    config.train.micro_batch_tokens = 256
    prompts = [tokenizer(f"Crate {i}: how many boxes are left on the quay?")["input_ids"] for i in range(PROMPTS)]
    sampler = HFSampler(model, tokenizer, config.sampler)
    learner = Learner(config, model, total_steps=2)
    advantages = torch.linspace(-1, 1, PROMPTS * GROUP_SIZE)

    # Warm-up: a short step on one prompt, so that the optimizer's state and first-call allocations are not the step's.
    sampler.config.max_new_tokens = 4
    groups = sampler.generate(prompts[:1], n=GROUP_SIZE, seed=0)
    learner.train_on(RolloutBatch.build(prompts[:1], groups, advantages[:GROUP_SIZE]))
    sampler.config.max_new_tokens = NEW_TOKENS

    before = start_phase()
    groups = sampler.generate(prompts, n=GROUP_SIZE, seed=1)
    sample = peak_since_reset() - before
    before = start_phase()
    learner.train_on(RolloutBatch.build(prompts, groups, advantages))
    learn = peak_since_reset() - before
    lengths = [len(c.token_ids) for group in groups for c in group]
    print(json.dumps({
        "sample_mib": sample / MIB,
        "learn_mib": learn / MIB,
        "step_tensor_mib": len(lengths) * NEW_TOKENS * len(tokenizer) * 4 / MIB,
        "vocab": len(tokenizer),
        "completion_lengths": lengths,
    }))


if __name__ == "__main__":
    main(sys.argv[1])
