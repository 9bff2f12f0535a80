"""Run by tests/test_distributed.py, in one process or under torchrun: 3 learner steps on one global batch of
16 completions for each loss_agg x (full fine-tuning, LoRA); rank 0 saves losses, gradient norms and the
final weights to argv[1]. Rank 0 takes completions 0-9 and rank 1 10-15, so the ranks run different numbers
of micro-batches (at most 40 tokens each: 3 against 2) and the padding path runs too; in the last case rank 1 has
no completion at all (as when algorithm.filter_zero_variance drops all of its groups)."""

import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from grpo_cli.algo.advantages import compute_advantages
from grpo_cli.config import AlgorithmConfig, Config
from grpo_cli.sampler.base import Completion
from grpo_cli.training import distributed
from grpo_cli.training.learner import Learner, RolloutBatch, shares_prompt

# (loss_agg, LoRA, rank 0's completions of the 16 under 2 ranks)
CASES = [(loss_agg, lora, 10) for loss_agg in ("seq_mean", "token_mean", "seq_sum_norm") for lora in (False, True)]
CASES.append(("token_mean", False, 16))
GROUP_SIZE = 4


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config)


def global_batch() -> RolloutBatch:
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, 100, (n,), generator=gen).tolist() for n in (5, 3, 7, 4)]
    groups = []
    for _ in prompts:
        lengths = torch.randint(1, 7, (GROUP_SIZE,), generator=gen).tolist()
        groups.append([
            Completion(torch.randint(1, 100, (n,), generator=gen).tolist(), [-4.0] * n, "", "length" if n == 6 else "stop")
            for n in lengths
        ])
    rewards = torch.rand(len(prompts) * GROUP_SIZE, generator=gen)
    return RolloutBatch.build(prompts, groups, compute_advantages(rewards, AlgorithmConfig(group_size=GROUP_SIZE, std_eps=1e-6), step=1))


def config(loss_agg: str, lora: bool) -> Config:
    cfg = Config()
    cfg.algorithm = AlgorithmConfig(group_size=GROUP_SIZE, loss_agg=loss_agg, kl_coef=0.05)
    cfg.train.micro_batch_tokens = 40
    cfg.train.prompts_per_step = 4
    cfg.sampler.temperature = 0.8
    cfg.optimizer.lr = 1e-2 if lora else 1e-3
    cfg.model.lora.enabled = lora
    cfg.model.lora.rank = 4
    cfg.model.lora.target_modules = ["q_proj", "v_proj"]
    return cfg


def run(loss_agg: str, lora: bool, split: int, rank: int, size: int) -> dict:
    learner = Learner(config(loss_agg, lora), tiny_llama(), total_steps=3)
    assert shares_prompt(learner.policy)  # under FSDP2 too: two forward passes per micro-batch
    batch = global_batch()
    rows = slice(0, 16) if size == 1 else (slice(0, split) if rank == 0 else slice(split, 16))
    local = batch.select(rows)
    steps = [learner.train_on(local) for _ in range(3)]
    weights = {name: p.detach().clone() for name, p in learner.refresh_full_model().named_parameters()}
    return {"loss": [m["loss"] for m in steps], "grad_norm": [m["grad_norm"] for m in steps],
            "kl": [m["kl/mean"] for m in steps], "ratio_min": [m["ratio/min"] for m in steps],
            "entropy": [m["entropy/mean"] for m in steps], "weights": weights}


def main(out: str) -> None:
    torch.set_num_threads(1)
    with distributed.running(config("seq_mean", False)) as world:
        results = {case: run(*case, world.rank, world.size) for case in CASES}
        if world.is_main:
            torch.save(results, out)


if __name__ == "__main__":
    main(sys.argv[1])
