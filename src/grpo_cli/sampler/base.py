"""The sampler interface: G completions per prompt, with the sampling log-prob of every token.

Log-prob convention (shared with the learner, so ratios and the engine/learner mismatch are comparable):
log p(token) = log_softmax(mask(logits / temperature))[token], with temperature the sampler's (1.0 when it
is 0) and mask the top-k/top-p truncation (-inf outside the kept tokens; none when greedy, or with top_k = 0
and top_p = 1): the log of the probability the token was actually drawn with.

Seeds: a call's `seed` comes from `sampling_seed(train.seed, purpose, step)`, and prompt i of a call draws
from `sampling_seed(seed, i)`, so no two steps, evals or prompts share a random stream.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

from grpo_cli.errors import GrpoError


@dataclass
class Completion:
    """One rollout's tokens after the prompt. A multi-turn rollout (rollout.py) interleaves the model's turns
    with the environment's observations: model_mask says which tokens the model wrote (None: all of them),
    an environment token's log-prob is 0, and transcript lists the turns and tool calls."""

    token_ids: list[int]  # generated tokens, EOS included when the completion stopped on it
    logprobs: list[float]  # one per token in token_ids
    text: str  # decoded without special tokens (multi-turn: all of token_ids, the environment's included)
    finish_reason: Literal["stop", "length"]
    model_mask: list[bool] | None = None  # one per token in token_ids: True where the model wrote it
    transcript: list[dict] | None = None  # multi-turn: rollout.py's turn records, in order


class Sampler(Protocol):
    context_length: int  # positions a prompt and its completion may fill (multi-turn rollouts stop before it)

    def generate(
        self, prompt_ids: list[list[int]], n: int, seed: int, temperature: float | None = None, stop: Sequence[str] = ()
    ) -> list[list[Completion]]:
        """For each prompt, n completions (a group). `temperature` overrides sampler.temperature (eval).
        A completion also stops right after the first of the `stop` strings it writes (the token that completes
        it is kept, with finish_reason "stop"): a tool call's closing tag in multi-turn rollouts."""

    def sync_weights(self, model) -> None:
        """Make the next generate() sample from `model`'s current weights."""

    def close(self) -> None:
        """Free the engine (use `contextlib.closing`)."""


def sampling_seed(*parts: int | str) -> int:
    """A reproducible seed below 2**62 from `parts`, e.g. (train.seed, "train", step).

    A hash, not an offset: seed + step would give step s + 1 the streams of step s shifted by one (vLLM
    seeds the j-th completion of a request seed + j), so consecutive steps would repeat completions.
    """
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2


def new_token_budget(max_new_tokens: int, prompt_tokens: int, context: int, context_key: str) -> int:
    """sampler.max_new_tokens, capped so that a prompt of `prompt_tokens` and its completion fit the model's
    `context` positions (`context_key` names that limit); warns when it caps."""
    if prompt_tokens >= context:
        raise GrpoError(
            f"a prompt of {prompt_tokens} tokens fills the model's context of {context} positions ({context_key}): "
            "shorten data.prompt_template or the prompts"
        )
    if prompt_tokens + max_new_tokens > context:
        warnings.warn(
            f"sampler.max_new_tokens={max_new_tokens} runs past the model's {context} positions ({context_key}) "
            "after the prompt: completions are capped at that many positions minus the prompt's tokens",
            stacklevel=2,
        )
    return min(max_new_tokens, context - prompt_tokens)


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
