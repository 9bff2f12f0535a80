"""Samplers: G completions per prompt with per-token sampling log-probs (see base.py)."""

from __future__ import annotations

from grpo_cli.config import Config
from grpo_cli.sampler.base import Completion, Sampler

__all__ = ["Completion", "Sampler", "build_sampler"]


def build_sampler(config: Config, model, tokenizer) -> Sampler:
    """The sampler named by `sampler.name`; vLLM is imported only when asked for (it is heavy and optional)."""
    if config.sampler.name == "vllm":
        from grpo_cli.sampler.vllm import VLLMSampler

        return VLLMSampler(config, model, tokenizer)
    from grpo_cli.sampler.hf import HFSampler

    return HFSampler(model, tokenizer, config.sampler)
