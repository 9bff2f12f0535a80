"""`sampler=hf`: group sampling with transformers `generate` on the live training model.

The sampler holds the training model itself (with LoRA, the peft model), so there are no weights to copy.
The prompts x n sequences are left-padded and generated in batches of `sampler.batch_size`.

Log-probs follow sampler/base.py: for the token y_t sampled at step t,
    logprob_t = log_softmax(z_t / T)[y_t],   z_t the model's raw logits, T the temperature (1 when greedy),
taken before top-k/top-p truncation. `generate` keeps every step's raw logits to compute them, that is
batch_size x max_new_tokens x vocab floats: lower sampler.batch_size for large vocabularies.
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig

from grpo_cli.config import SamplerConfig
from grpo_cli.sampler.base import Completion, eos_token_ids


class HFSampler:
    def __init__(self, model, tokenizer, config: SamplerConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.eos_token_ids = eos_token_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0]

    def sync_weights(self, model) -> None:
        self.model = model

    @torch.no_grad()
    def generate(
        self, prompt_ids: list[list[int]], n: int, seed: int, temperature: float | None = None
    ) -> list[list[Completion]]:
        temperature = self.config.temperature if temperature is None else temperature
        sequences = [ids for ids in prompt_ids for _ in range(n)]
        batch_size = self.config.batch_size
        was_training = self.model.training
        self.model.eval()  # no dropout while sampling; the caller's mode comes back in `finally`
        try:
            # A private RNG stream: the same seed gives the same completions, and training's RNG is untouched.
            with torch.random.fork_rng(devices=_cuda_devices(self.model)):
                torch.manual_seed(seed)
                completions = []
                for start in range(0, len(sequences), batch_size):
                    completions += self._generate_batch(sequences[start : start + batch_size], temperature)
        finally:
            self.model.train(was_training)
        return [completions[i * n : (i + 1) * n] for i in range(len(prompt_ids))]

    def _generate_batch(self, prompts: list[list[int]], temperature: float) -> list[Completion]:
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        device = self.model.device
        output = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=self._generation_config(temperature),
        )
        new_tokens = output.sequences[:, width:]
        logprob_temperature = temperature if temperature > 0 else 1.0
        logprobs = torch.stack(
            [
                torch.log_softmax(step_logits / logprob_temperature, dim=-1).gather(-1, step_tokens[:, None])[:, 0]
                for step_logits, step_tokens in zip(output.logits, new_tokens.T)
            ],
            dim=1,
        )
        return [self._completion(tokens.tolist(), row_logprobs.tolist()) for tokens, row_logprobs in zip(new_tokens, logprobs)]

    def _completion(self, tokens: list[int], logprobs: list[float]) -> Completion:
        """Cut after the first EOS (generate pads finished rows); no EOS means max_new_tokens ran out."""
        stop = next((i for i, token in enumerate(tokens) if token in self.eos_token_ids), None)
        if stop is None:
            length, finish_reason = len(tokens), "length"
        else:
            length, finish_reason = stop + 1, "stop"
        tokens = tokens[:length]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return Completion(token_ids=tokens, logprobs=logprobs[:length], text=text, finish_reason=finish_reason)

    def _generation_config(self, temperature: float) -> GenerationConfig:
        greedy = temperature == 0
        return GenerationConfig(
            do_sample=not greedy,
            temperature=1.0 if greedy else temperature,
            top_k=0 if greedy else self.config.top_k,
            top_p=1.0 if greedy else self.config.top_p,
            # A model's generation_config.json may ask for a repetition penalty; it would make the sampling
            # distribution differ from the log-prob convention the learner relies on.
            repetition_penalty=1.0,
            max_new_tokens=self.config.max_new_tokens,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            use_cache=True,
            return_dict_in_generate=True,
            output_logits=True,
        )


def _cuda_devices(model) -> list[int]:
    device = model.device
    return [device.index or 0] if device.type == "cuda" else []
