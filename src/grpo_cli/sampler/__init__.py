"""Samplers: G completions per prompt with per-token sampling log-probs (see base.py)."""

from __future__ import annotations

from grpo_cli.config import Config
from grpo_cli.sampler.base import Completion, Sampler

__all__ = ["Completion", "Sampler", "build_sampler"]


def build_sampler(config: Config, model, tokenizer) -> Sampler:
    """The sampler named by `sampler.name`, sampling from `model` (the live model: learner.policy, or the
    model a command loaded) in model.dtype, also when the model holds float32 master weights (learner.py).
    vLLM is imported only when asked for (it is heavy and optional). Close it when done (contextlib.closing)."""
    from grpo_cli.models import resolve_dtype

    dtype = resolve_dtype(config.model.dtype, model.device)
    if config.sampler.name == "vllm":
        from grpo_cli.sampler.vllm import VLLMSampler

        return VLLMSampler(config, model, tokenizer, dtype)
    from grpo_cli.sampler.hf import HFSampler

    return HFSampler(model, tokenizer, config.sampler, dtype)
