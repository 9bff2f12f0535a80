"""`sampler=hf`: group sampling with transformers `generate` on the live training model.

The sampler holds the training model itself (with LoRA, the peft model), so there are no weights to copy.
Each call generates whole groups (a group larger than the batch in pieces): the batch's distinct prompts are
left-padded and prefilled once, all but their last token, and that KV cache is repeated for the copies, so
`generate` computes each prompt once for its G completions. The batch holds `sampler.batch_size` sequences,
or, when that is null, as many as fit a fraction of the free memory (device memory on GPU, RAM on CPU) by
`sequence_bytes`: the KV cache of the prompt and the new tokens, and a few vocabulary-sized rows of one step.

Log-probs follow sampler/base.py: for the token y_t sampled at step t,
    logprob_t = log_softmax(mask(z_t / T))[y_t],   z_t the model's raw logits, T the temperature (1 when greedy),
mask the top-k/top-p truncation: they are the log of the probability the token was drawn with. They come
from the processed scores (temperature, top-k, top-p applied) step by step (SampledLogprobs): no step keeps
the scores of the steps before it, so a 49,152-token vocabulary costs a few [batch, vocab] rows, not
[batch, max_new_tokens, vocab]. The temperature, top-k and top-p processors are passed to `generate` as a
list (`sampling_processors`), ahead of the one that records, with the generation config's own left neutral:
`generate` would otherwise append them after every processor it is given.

Every sampling parameter is passed explicitly and the model's generation_config.json is ignored (as the vLLM
sampler does): a repetition penalty, min_p or top_k there would change the distribution the learner assumes.
A model held in float32 master weights (learner.py) samples under autocast to the compute dtype.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from transformers import DynamicCache, GenerationConfig
from transformers.generation.logits_process import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from grpo_cli.config import SamplerConfig
from grpo_cli.models import compute_autocast
from grpo_cli.sampler.base import Completion, OnGroups, eos_token_ids, new_token_budget

# The share of free memory an automatic batch may take: on GPU the learner's memory is already allocated and
# the rest is the sampler's; on CPU the machine's RAM is shared with the verifier's workers and everything else.
GPU_MEMORY_FRACTION = 0.8
CPU_MEMORY_FRACTION = 0.5
# Vocabulary-sized float32 rows a sequence holds at once while generating: a step's logits, processed scores and
# probabilities, and the previous step's log-softmax (SampledLogprobs), whatever max_new_tokens is.
SCORE_ROWS = 4


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
        self, prompt_ids: list[list[int]], n: int, seed: int, temperature: float | None = None, stop: Sequence[str] = (),
        on_groups: OnGroups | None = None,
    ) -> list[list[Completion]]:
        temperature = self.config.temperature if temperature is None else temperature
        batch_size = self.config.batch_size or self.automatic_batch_size(prompt_ids)
        was_training = self.model.training
        self.model.eval()  # no dropout while sampling; the caller's mode comes back in `finally`
        groups: list[list[Completion]] = []
        piece: list[Completion] = []  # the finished pieces of a group larger than the batch
        try:
            # A private RNG stream: the same seed gives the same completions, and training's RNG is untouched.
            with torch.random.fork_rng(devices=cuda_devices(self.model)), plain_generation_config(self.model):
                torch.manual_seed(seed)
                for prompts, copies in _batches(prompt_ids, n, batch_size):
                    completions = self._generate_batch(prompts, copies, temperature, stop)
                    if copies < n:
                        piece += completions
                        if len(piece) < n:
                            continue
                        completions, piece = piece, []
                    finished = [completions[i * n : (i + 1) * n] for i in range(len(completions) // n)]
                    groups += finished
                    if on_groups is not None:
                        on_groups(finished)
        finally:
            self.model.train(was_training)
        return groups

    def automatic_batch_size(self, prompt_ids: list[list[int]]) -> int:
        """Sequences per generate call when sampler.batch_size is null: as many as fit the free memory's share."""
        device = self.model.device
        if device.type == "cuda":  # free on the device, and what torch's allocator holds unused
            unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
            free = (torch.cuda.mem_get_info(device)[0] + unused) * GPU_MEMORY_FRACTION
        else:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * CPU_MEMORY_FRACTION
        width = max(len(ids) for ids in prompt_ids)
        dtype_bytes = torch.finfo(self.compute_dtype).bits // 8
        return max(1, int(free // sequence_bytes(self.model.config, width, self.config.max_new_tokens, dtype_bytes)))

    def _generate_batch(self, prompts: list[list[int]], copies: int, temperature: float, stop: Sequence[str] = ()) -> list[Completion]:
        """`copies` completions of each prompt, prompt-major; each prompt is computed once."""
        device = self.model.device
        input_ids, attention_mask = left_padded(prompts, self.pad_token_id, device)
        width = input_ids.shape[1]
        max_new_tokens = new_token_budget(
            self.config.max_new_tokens, width, self.model.config.max_position_embeddings, "max_position_embeddings"
        )
        logprobs = SampledLogprobs()
        with compute_autocast(device, self.compute_dtype):
            cache = self._prefill(input_ids[:, :-1], attention_mask[:, :-1], copies) if width > 1 else None
            sequences = self.model.generate(
                input_ids=input_ids.repeat_interleave(copies, dim=0),
                attention_mask=attention_mask.repeat_interleave(copies, dim=0),
                past_key_values=cache,
                generation_config=self.generation_config(temperature, max_new_tokens, stop),
                logits_processor=LogitsProcessorList([*self.sampling_processors(temperature), logprobs]),
                tokenizer=self.tokenizer,  # generate needs it to match stop strings
            )
        new_tokens = sequences[:, width:]
        return [
            self._completion(tokens.tolist(), row_logprobs.tolist(), stop)
            for tokens, row_logprobs in zip(new_tokens, logprobs.of(new_tokens))
        ]

    def _prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, copies: int) -> DynamicCache:
        """The KV cache of the left-padded prompts (all but their last token, which generate computes to get the
        first token's logits), each row repeated `copies` times."""
        cache = DynamicCache(config=self.model.config)
        # Positions count from each prompt's first real token, as generate numbers them.
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, past_key_values=cache,
            use_cache=True, logits_to_keep=1,
        )
        cache.batch_repeat_interleave(copies)
        return cache

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

    def generation_config(self, temperature: float, max_new_tokens: int, stop: Sequence[str] = ()) -> GenerationConfig:
        """The settings of every generate call, nothing from the model; temperature, top-k and top-p neutral:
        `sampling_processors(temperature)` applies them."""
        return GenerationConfig(
            do_sample=temperature != 0,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            stop_strings=list(stop) or None,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            use_cache=True,
        )

    def sampling_processors(self, temperature: float) -> LogitsProcessorList:
        """Temperature, top-k and top-p from sampler.* and `temperature`, in the order and under the conditions
        `generate` builds them from a generation config; none when greedy."""
        processors = LogitsProcessorList()
        if temperature == 0:
            return processors
        if temperature != 1.0:
            processors.append(TemperatureLogitsWarper(temperature))
        if self.config.top_k != 0:
            processors.append(TopKLogitsWarper(self.config.top_k))
        if self.config.top_p < 1.0:
            processors.append(TopPLogitsWarper(self.config.top_p))
        return processors


class SampledLogprobs(LogitsProcessor):
    """The last logits processor of a generate call: the log-prob of each drawn token under the processed scores
    it was drawn from, one step at a time. The token drawn from step t's scores is known only at step t + 1 (the
    last column of input_ids) or from the output: each call keeps its step's log-softmax [batch, vocab] until
    then, and no more."""

    def __init__(self):
        self.steps: list[torch.Tensor] = []  # [batch] per step whose token is known
        self.pending: torch.Tensor | None = None  # log_softmax of the last step's scores [batch, vocab]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.pending is not None:
            self._take(input_ids[:, -1])
        self.pending = torch.log_softmax(scores, dim=-1)
        return scores

    def of(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """[batch, new tokens] the log-probs of `new_tokens` (generate's output after the prompt). On MPS generate
        computes one step more than it returns (a deferred stop check): the log-probs stop where the tokens do."""
        if len(self.steps) < new_tokens.shape[1]:
            self._take(new_tokens[:, len(self.steps)])
        return torch.stack(self.steps[: new_tokens.shape[1]], dim=1)

    def _take(self, tokens: torch.Tensor) -> None:
        self.steps.append(self.pending.gather(-1, tokens[:, None])[:, 0])
        self.pending = None


def _stop_string_length(tokenizer, tokens: list[int], stop: Sequence[str]) -> int | None:
    """How many of `tokens` it takes to write one of the `stop` strings (None: they never do)."""
    if not stop or not any(string in tokenizer.decode(tokens) for string in stop):
        return None
    return next(n for n in range(1, len(tokens) + 1) if any(string in tokenizer.decode(tokens[:n]) for string in stop))


def left_padded(prompts: list[list[int]], pad_token_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask [len(prompts), longest]: the prompts right-aligned, as generate expects."""
    width = max(len(ids) for ids in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def sequence_bytes(model_config, prompt_tokens: int, max_new_tokens: int, dtype_bytes: int) -> int:
    """Generation memory of one sequence: its keys and values for every position (prompt_tokens +
    max_new_tokens) in every layer, in `dtype_bytes`-byte values, and SCORE_ROWS float32 rows of vocabulary size."""
    heads = model_config.num_attention_heads
    head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // heads
    kv_heads = getattr(model_config, "num_key_value_heads", None) or heads
    kv = 2 * model_config.num_hidden_layers * kv_heads * head_dim * (prompt_tokens + max_new_tokens) * dtype_bytes
    return kv + SCORE_ROWS * model_config.vocab_size * 4


def _batches(prompt_ids: list[list[int]], n: int, batch_size: int) -> Iterator[tuple[list[list[int]], int]]:
    """(prompts, copies of each) per generate call, at most batch_size sequences: whole groups, or one
    prompt's group in pieces when n > batch_size."""
    if n <= batch_size:
        per_call = batch_size // n
        for start in range(0, len(prompt_ids), per_call):
            yield prompt_ids[start : start + per_call], n
        return
    for ids in prompt_ids:
        for start in range(0, n, batch_size):
            yield [ids], min(batch_size, n - start)


@contextmanager
def plain_generation_config(model):
    """generate() fills every setting the given config leaves unset (min_p, repetition_penalty,
    no_repeat_ngram_size, ...) from model.generation_config: hold a blank one while sampling."""
    transformers_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = transformers_model.generation_config
    transformers_model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        transformers_model.generation_config = saved


def cuda_devices(model) -> list[int]:
    device = model.device
    return [device.index or 0] if device.type == "cuda" else []
