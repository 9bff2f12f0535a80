"""`sampler=hf`: group sampling with transformers `generate` on the live training model.

The sampler holds the training model itself (with LoRA, the peft model), so there are no weights to copy.
The prompts x n sequences are left-padded and generated in batches of `sampler.batch_size`.

Log-probs follow sampler/base.py: for the token y_t sampled at step t,
    logprob_t = log_softmax(mask(z_t / T))[y_t],   z_t the model's raw logits, T the temperature (1 when greedy),
mask the top-k/top-p truncation: they are the log of the probability the token was drawn with. They come
from `generate`'s processed scores (temperature, top-k, top-p applied), kept for every step: batch_size x
max_new_tokens x vocab floats, so lower sampler.batch_size for large vocabularies.

Every sampling parameter is passed explicitly and the model's generation_config.json is ignored (as the vLLM
sampler does): a repetition penalty, min_p or top_k there would change the distribution the learner assumes.
A model held in float32 master weights (learner.py) samples under autocast to the compute dtype.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch
from transformers import GenerationConfig

from grpo_cli.config import SamplerConfig
from grpo_cli.models import compute_autocast
from grpo_cli.sampler.base import Completion, eos_token_ids, new_token_budget


class HFSampler:
    def __init__(self, model, tokenizer, config: SamplerConfig, compute_dtype: torch.dtype | None = None):
        """compute_dtype: model.dtype when the model holds float32 master weights; None: the model's own."""
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.compute_dtype = compute_dtype or model.dtype
        self.eos_token_ids = eos_token_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0]

    @property
    def context_length(self) -> int:
        return self.model.config.max_position_embeddings

    def sync_weights(self, model) -> None:
        self.model = model

    def close(self) -> None:
        """Nothing to free: the sampler holds the live model."""

    @torch.no_grad()
    def generate(
        self, prompt_ids: list[list[int]], n: int, seed: int, temperature: float | None = None, stop: Sequence[str] = ()
    ) -> list[list[Completion]]:
        temperature = self.config.temperature if temperature is None else temperature
        sequences = [ids for ids in prompt_ids for _ in range(n)]
        batch_size = self.config.batch_size
        was_training = self.model.training
        self.model.eval()  # no dropout while sampling; the caller's mode comes back in `finally`
        try:
            # A private RNG stream: the same seed gives the same completions, and training's RNG is untouched.
            with torch.random.fork_rng(devices=_cuda_devices(self.model)), _plain_generation_config(self.model):
                torch.manual_seed(seed)
                completions = []
                for start in range(0, len(sequences), batch_size):
                    completions += self._generate_batch(sequences[start : start + batch_size], temperature, stop)
        finally:
            self.model.train(was_training)
        return [completions[i * n : (i + 1) * n] for i in range(len(prompt_ids))]

    def _generate_batch(self, prompts: list[list[int]], temperature: float, stop: Sequence[str] = ()) -> list[Completion]:
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        device = self.model.device
        max_new_tokens = new_token_budget(
            self.config.max_new_tokens, width, self.model.config.max_position_embeddings, "max_position_embeddings"
        )
        with compute_autocast(device, self.compute_dtype):
            output = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=self._generation_config(temperature, max_new_tokens, stop),
                tokenizer=self.tokenizer,  # generate needs it to match stop strings
            )
        new_tokens = output.sequences[:, width:]
        # Scores: the logits after temperature (none when greedy) and top-k/top-p (-inf outside the support).
        logprobs = torch.stack(
            [
                torch.log_softmax(step_scores.float(), dim=-1).gather(-1, step_tokens[:, None])[:, 0]
                for step_scores, step_tokens in zip(output.scores, new_tokens.T)
            ],
            dim=1,
        )
        return [
            self._completion(tokens.tolist(), row_logprobs.tolist(), stop) for tokens, row_logprobs in zip(new_tokens, logprobs)
        ]

    def _completion(self, tokens: list[int], logprobs: list[float], stop: Sequence[str] = ()) -> Completion:
        """Cut after the first EOS or stop string (generate pads finished rows); neither means max_new_tokens ran out."""
        eos = next((i for i, token in enumerate(tokens) if token in self.eos_token_ids), None)
        length = _stop_string_length(self.tokenizer, tokens[: None if eos is None else eos], stop)
        if length is None and eos is None:
            length, finish_reason = len(tokens), "length"
        else:
            length, finish_reason = length or eos + 1, "stop"
        tokens = tokens[:length]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return Completion(token_ids=tokens, logprobs=logprobs[:length], text=text, finish_reason=finish_reason)

    def _generation_config(self, temperature: float, max_new_tokens: int, stop: Sequence[str] = ()) -> GenerationConfig:
        greedy = temperature == 0
        return GenerationConfig(
            do_sample=not greedy,
            temperature=1.0 if greedy else temperature,
            top_k=0 if greedy else self.config.top_k,
            top_p=1.0 if greedy else self.config.top_p,
            max_new_tokens=max_new_tokens,
            stop_strings=list(stop) or None,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            use_cache=True,
            return_dict_in_generate=True,
            output_scores=True,
        )


def _stop_string_length(tokenizer, tokens: list[int], stop: Sequence[str]) -> int | None:
    """How many of `tokens` it takes to write one of the `stop` strings (None: they never do)."""
    if not stop or not any(string in tokenizer.decode(tokens) for string in stop):
        return None
    return next(n for n in range(1, len(tokens) + 1) if any(string in tokenizer.decode(tokens[:n]) for string in stop))


@contextmanager
def _plain_generation_config(model):
    """generate() fills every setting the given config leaves unset (min_p, repetition_penalty,
    no_repeat_ngram_size, ...) from model.generation_config: hold a blank one while sampling."""
    transformers_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = transformers_model.generation_config
    transformers_model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        transformers_model.generation_config = saved


def _cuda_devices(model) -> list[int]:
    device = model.device
    return [device.index or 0] if device.type == "cuda" else []
