"""The sampler interface: G completions per prompt, with the sampling log-prob of every token.

Log-prob convention (shared with the learner, so ratios and the engine/learner mismatch are comparable):
log p(token) = log_softmax(logits / temperature)[token], with temperature the sampler's (1.0 when it is 0),
before any top-p/top-k truncation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from grpo_cli.errors import GrpoError


@dataclass
class Completion:
    token_ids: list[int]  # generated tokens, EOS included when the completion stopped on it
    logprobs: list[float]  # one per token in token_ids
    text: str  # decoded without special tokens
    finish_reason: Literal["stop", "length"]


class Sampler(Protocol):
    def generate(
        self, prompt_ids: list[list[int]], n: int, seed: int, temperature: float | None = None
    ) -> list[list[Completion]]:
        """For each prompt, n completions (a group). `temperature` overrides sampler.temperature (eval)."""

    def sync_weights(self, model) -> None:
        """Make the next generate() sample from `model`'s current weights."""


def eos_token_ids(model, tokenizer) -> list[int]:
    """The tokenizer's EOS plus any the model's generation config adds (chat models end turns on their own token)."""
    configured = model.generation_config.eos_token_id
    configured = [configured] if isinstance(configured, int) else list(configured or [])
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids += [token for token in configured if token not in ids]
    if not ids:
        raise GrpoError(
            f"{tokenizer.name_or_path}: the tokenizer has no eos_token and generation_config.json names no "
            "eos_token_id; set one so completions can stop"
        )
    return ids
