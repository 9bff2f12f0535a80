"""`sampler=vllm`: a vLLM engine in the training process, its weights overwritten in place after every step.

The engine serves the model the command holds, not model.name_or_path: it starts from the directory that
model was loaded from (for a peft model, its base model's) with dummy weights, then receives the live
weights (sync_weights), in model.dtype. So `grpo sft sft.init_from=DIR` samples its SFT model and `grpo eval`
of a LoRA checkpoint samples the merged adapter.

Generation: one request per prompt with SamplingParams(n=G), so the G completions share the prompt's KV
blocks. Prompt i of a call with seed s gets seed sampling_seed(s, i) (sampler/base.py); vLLM gives its j-th
completion that seed + j. max_tokens is capped per prompt so that prompt and completion fit the engine's
max_model_len (sampler.max_model_len, at most the model's max_position_embeddings).

Log-probs follow sampler/base.py, logprob_t = log_softmax(mask(z_t / T))[y_t], mask the top-k/top-p
truncation. vLLM's `logprobs_mode` decides what it returns:
    raw_logprobs        log_softmax(z_t)[y_t]                the default; wrong whenever T != 1 or truncating
    processed_logprobs  log_softmax(mask(z_t / T))[y_t]      the convention
so the engine runs with processed_logprobs; greedy (T = 0) returns log_softmax(z_t).

Weight sync: `collective_rpc("reload_weights", weights_iterator=...)` hands the learner's tensors to vLLM's
in-place reloader, which reruns each layer's weight processing (on CPU, linear weights are repacked into
oneDNN/sgl kernels and the plain parameters dropped, so `model.load_weights` alone fails) and copies the
result into the engine's existing storage. The engine core runs in this process
(VLLM_ENABLE_V1_MULTIPROCESSING=0, set here before the engine starts), so the tensors travel by reference:
no disk, no pickling. With peft LoRA the engine gets W + (alpha/r) B A for every adapted layer, computed one
layer at a time from the adapter as it is now: vLLM's own LoRA path would need the adapter on disk per step
and samples slower (scripts/bench_sampler.py --lora measures both). The prefix cache is reset after a sync,
since its blocks hold keys and values of the old weights.

The engine shares the process with the learner: generate runs it with the torch thread count vLLM picks for
serving (1 unless OMP_NUM_THREADS is set), everything else keeps the learner's. One device only
(sampler.tensor_parallel_size = 1): a tensor-parallel engine would run its workers in other processes. Under
torchrun on GPUs each rank's engine runs on the rank's GPU through vLLM's external_launcher executor, which takes
the device from LOCAL_RANK (its one-process executor would put every rank's engine on cuda:0).

Sleep mode (sampler.enable_sleep_mode, GPU only: vLLM cannot sleep on CPU, so there it is ignored with a
warning): after each generate the engine offloads its weights to host memory and frees its KV cache
(vLLM sleep level 1), leaving the device to the learner; sync and the next generate wake what they need. Whatever
calls the engine directly (grpo bench's bare generate) does so inside `awake()`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from peft import PeftModel
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
from vllm.platforms import current_platform

from grpo_cli.config import Config
from grpo_cli.models import checkpoint_weights
from grpo_cli.sampler.base import Completion, OnGroups, eos_token_ids, new_token_budget, sampling_seed
from grpo_cli.training import distributed


class VLLMSampler:
    def __init__(self, config: Config, model, tokenizer, dtype: torch.dtype):
        """Serve `model` (the live model, see the module docstring) in `dtype` (model.dtype)."""
        self.config = config.sampler
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids(model, tokenizer)
        self.sleep_mode = self.config.enable_sleep_mode and current_platform.is_sleep_mode_available()
        if self.config.enable_sleep_mode and not self.sleep_mode:
            warnings.warn(
                "sampler.enable_sleep_mode=true is ignored: vLLM has no sleep mode on this device (CPU)", stacklevel=2
            )
        self.asleep = False
        kv_cache_gb = self.config.kv_cache_gb
        # The engine core must run in this process for weights to move by reference; vLLM reads this at start.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        set_num_threads, learner_threads = torch.set_num_threads, torch.get_num_threads()
        self.dtype = dtype
        self.max_model_len = min(self.config.max_model_len, model.config.max_position_embeddings)
        self.llm = LLM(
            model=model_directory(model),
            # The weights come from the live model right below: reading them from the directory would be wasted.
            load_format="dummy",
            dtype=str(dtype).removeprefix("torch."),
            seed=config.train.seed,
            gpu_memory_utilization=self.config.gpu_memory_utilization,
            kv_cache_memory_bytes=None if kv_cache_gb is None else int(kv_cache_gb * 2**30),
            max_model_len=self.max_model_len,
            enable_sleep_mode=self.sleep_mode,
            logprobs_mode="processed_logprobs",
            # Sampling defaults (repetition penalty, ...) must not come from the model's generation_config.json.
            generation_config="vllm",
            # A prompt split across scheduler steps makes vLLM rewind the request's seeded generator, which
            # CPU generators cannot do ("CPU Generator does not use offset"): keep every prefill whole.
            enable_chunked_prefill=False,
            # A multi-turn rollout (rollout.py) continues from its whole token prefix each turn: the prompt's
            # and earlier turns' KV blocks are reused, not recomputed.
            enable_prefix_caching=True,
            distributed_executor_backend="external_launcher" if on_rank_gpu(model) else None,
        )
        # vLLM sets torch to its serving thread count (1 unless OMP_NUM_THREADS is set: OpenMP workers spinning
        # between small decode ops cost more than they give; 25x slower here on 2 busy cores) and, on CPU, swaps
        # torch.set_num_threads for a no-op. The learner shares this process: it gets its threads back, and
        # the engine gets its own count around each generate.
        self.engine_threads = torch.get_num_threads()
        torch.set_num_threads = set_num_threads
        torch.set_num_threads(learner_threads)
        # Every reload warns that the rotary embedding "failed to load": it has no checkpoint weights and keeps
        # its cos/sin cache, as it should. (Set after the engine starts: vLLM reconfigures its loggers then.)
        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").setLevel(logging.ERROR)
        self.sync_weights(model)

    @property
    def context_length(self) -> int:
        return self.max_model_len

    def sampling_params(self, n: int, seed: int, temperature: float, max_tokens: int, stop: Sequence[str] = ()) -> SamplingParams:
        return SamplingParams(
            n=n,
            seed=seed,
            temperature=temperature,
            top_p=self.config.top_p,
            top_k=self.config.top_k,
            max_tokens=max_tokens,
            stop_token_ids=self.eos_token_ids,
            stop=list(stop),
            include_stop_str_in_output=True,
            logprobs=0,  # the sampled token's log-prob only
            detokenize=bool(stop),  # stop strings are matched on the detokenized text
        )

    def generate(
        self, prompt_ids: list[list[int]], n: int, seed: int, temperature: float | None = None, stop: Sequence[str] = (),
        on_groups: OnGroups | None = None,
    ) -> list[list[Completion]]:
        temperature = self.config.temperature if temperature is None else temperature
        # vLLM refuses n > 1 when greedy: one completion is asked for and repeated, the n are identical anyway.
        copies = n if temperature == 0 else 1
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids]
        context_key = "sampler.max_model_len, max_position_embeddings"
        params = [
            self.sampling_params(
                n // copies,
                sampling_seed(seed, i),
                temperature,
                new_token_budget(self.config.max_new_tokens, len(ids), self.max_model_len, context_key),
                stop,
            )
            for i, ids in enumerate(prompt_ids)
        ]
        with self.awake(), torch_threads(self.engine_threads):
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        samples = [sample for output in outputs for sample in output.outputs * copies]
        texts = self.tokenizer.batch_decode([sample.token_ids for sample in samples], skip_special_tokens=True)
        completions = [
            Completion(
                token_ids=list(sample.token_ids),
                logprobs=[step[token].logprob for step, token in zip(sample.logprobs, sample.token_ids)],
                text=text,
                # vLLM stops on a stop token with the token kept, as the HF sampler does; "length" covers
                # max_tokens and max_model_len.
                finish_reason="stop" if sample.finish_reason == "stop" else "length",
            )
            for sample, text in zip(samples, texts)
        ]
        groups = [completions[i * n : (i + 1) * n] for i in range(len(prompt_ids))]
        if on_groups is not None:  # one engine call: every group finishes at its end
            on_groups(groups)
        return groups

    @contextmanager
    def awake(self) -> Iterator[None]:
        """The engine with its weights and KV cache on the device for the calls inside; with sleep mode it goes
        back to sleep after them."""
        if self.asleep:
            self._wake_up()
            self.asleep = False
        yield
        if self.sleep_mode:
            self.llm.sleep(level=1)
            self.asleep = True

    @torch.no_grad()
    def sync_weights(self, model) -> None:
        if self.asleep:
            self._wake_up(tags=["weights"])  # the KV cache stays freed until the next generate
        weights = ((name, tensor.to(self.dtype)) for name, tensor in checkpoint_weights(model))
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()

    def _wake_up(self, tags: list[str] | None = None) -> None:
        """Map the engine's memory (`tags` of it, None: all) back onto the device. The learner's freed blocks
        go back to the device first: torch's allocator keeps them cached, and where the learner and the engine
        fit only one at a time (what sleep mode is for) the engine could not map its memory again."""
        torch.cuda.empty_cache()
        self.llm.wake_up(tags=tags)

    def close(self) -> None:
        """Stop the engine, freeing its weights and KV cache."""
        self.llm.llm_engine.engine_core.shutdown()


def on_rank_gpu(model) -> bool:
    """Whether `model` is a torchrun rank's model on a GPU: then its engine must take the rank's device."""
    return model.device.type == "cuda" and distributed.world().size > 1


def model_directory(model) -> str:
    """Where `model` was loaded from: its config and tokenizer, for the engine (a peft model: its base's)."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    return base.config._name_or_path


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
