"""`grpo plan`: the compute budget and a GPU memory estimate of a configuration, before spending GPU hours.

Nothing loads or downloads: the model's shape comes from `model.name_or_path`/config.json when that is a
local directory, else from `KNOWN_CONFIGS` (Llama, Mistral, Qwen2 and Qwen3 layouts).

Compute (N train prompts, E epochs, P = train.prompts_per_step, G = algorithm.group_size):
    steps            = ceil(N x E / P), at most train.max_steps
    completions      = steps x P x G
    generated tokens = completions x mean completion length     (default sampler.max_new_tokens / 2)
    learner tokens   = completions x (mean prompt + mean completion length) x passes, where
                       passes = num_iterations (policy forward + backward)
                                + 1 reference forward if kl_coef > 0
                                + 1 old-policy forward if num_iterations > 1

Memory, in bytes (b bytes per weight of model.dtype; L layers, h hidden, q = heads x head_dim,
kv = kv_heads x head_dim, I intermediate, V vocab; S = mean prompt + sampler.max_new_tokens, the padded
length of a completion; T = train.micro_batch_tokens, or 8 x S when null, tokens per micro-batch):
    policy weights    LoRA: params x b; full fine-tuning: params x 4 (float32 master weights, learner.py)
    reference         0 with LoRA (the base with the adapter disabled) or kl_coef = 0, else params x b
    trainable         LoRA: rank x (in + out) per target module per layer, in float32; else params, float32
    gradients         trainable x 4
    optimizer state   AdamW's two moments: 2 x gradients
    autocast copy     full fine-tuning with b < 4: params x b, the weights cast for the forward pass and kept
                      for backward (learner phase only)
    activations       a layer saves a = 4h + 2q + 2kv + 4I (+ rank per LoRA target) values per token:
                        without gradient checkpointing  T x L x a x b
                        with                            T x (L x h + a) x b   (layer inputs, one layer recomputed)
    logits            T x V x 8 (float32 logits and their gradient; the log-softmax exists a chunk at a time)
    vLLM              gpu_memory_utilization x GPU: its own copy of the weights, the rest KV cache at
                      2 x L x kv x b per token (or the weights + sampler.kv_cache_gb when that is set)
    hf generate       KV cache of sampler.batch_size sequences of S tokens (null: prompts_per_step x G)
With N > 1 GPUs (--nproc, or torchrun's WORLD_SIZE) the learner runs under FSDP2 (distributed.py), per GPU:
    policy weights    params x 4 / N (float32 shards; bf16 compute)
    reference         params x b / N when there is one
    trainable         its float32 shards: trainable x 4 / N, and so gradients and optimizer state
    gathered layers   (embeddings + 2 decoder layers) x 2: the unsharded bf16 weights of the layer being
                      computed and the one being prefetched
    sampler copy      params x b: each rank's unsharded copy of the policy for its own sampler
Peak = resident (weights .. optimizer state) + learner phase (activations + logits + autocast copy) + sampler
memory, or the larger of (resident + sampler) and (resident + learner phase) when the two phases do not overlap (vLLM
sleep mode, or generation with the policy's own weights through transformers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from grpo_cli.config import AUTO_MICRO_BATCH_COMPLETIONS, Config
from grpo_cli.errors import ConfigError, GrpoError

GiB = 1024**3
DEFAULT_GPU_GIB = 80.0  # the reference recipe's H100 80GB
DEFAULT_MEAN_PROMPT_TOKENS = 128
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
MASTER_BYTES = 4  # trainable weights are float32 whatever model.dtype (learner.py); peft's adapters too

# config.json excerpts of well-known models (all bfloat16), keyed by the last part of their hub name.
CONFIG_COLUMNS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "intermediate_size", "vocab_size", "tie_word_embeddings")
KNOWN_CONFIGS = {
    name: dict(zip(CONFIG_COLUMNS, values), torch_dtype="bfloat16")
    for name, values in {
        "Qwen2.5-0.5B-Instruct": ("qwen2", 896, 24, 14, 2, 4864, 151936, True),
        "Qwen2.5-1.5B-Instruct": ("qwen2", 1536, 28, 12, 2, 8960, 151936, True),
        "Qwen2.5-7B-Instruct": ("qwen2", 3584, 28, 28, 4, 18944, 152064, False),
        "Llama-3.1-8B-Instruct": ("llama", 4096, 32, 32, 8, 14336, 128256, False),
    }.items()
}
LAYOUTS = ("llama", "mistral", "qwen2", "qwen3")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    biased: frozenset[str]  # linear layers with a bias
    qk_norm: bool  # Qwen3 normalises queries and keys per head
    dtype: str

    @classmethod
    def from_config(cls, config: dict, source: str) -> "ModelShape":
        model_type = config.get("model_type")
        if model_type not in LAYOUTS:
            raise GrpoError(
                f"{source}: model_type {model_type!r} has no memory formula; plan knows {', '.join(LAYOUTS)}"
            )
        if model_type == "qwen2":
            biased = {"q_proj", "k_proj", "v_proj"}
        else:
            biased = set(ATTENTION) if config.get("attention_bias") else set()
            biased |= set(MLP) if config.get("mlp_bias") else set()
        heads = config["num_attention_heads"]
        return cls(
            hidden_size=config["hidden_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            intermediate_size=config["intermediate_size"],
            vocab_size=config["vocab_size"],
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            biased=frozenset(biased),
            qk_norm=model_type == "qwen3",
            dtype=config.get("dtype") or config.get("torch_dtype") or "float32",
        )

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer in one decoder layer."""
        h, i = self.hidden_size, self.intermediate_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def num_params(self) -> int:
        per_layer = sum(
            n_in * n_out + (n_out if name in self.biased else 0) for name, (n_in, n_out) in self.linears().items()
        )
        per_layer += 2 * self.hidden_size + (2 * self.head_dim if self.qk_norm else 0)  # RMSNorm weights
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.num_layers * per_layer + self.hidden_size

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes


def model_shape(name_or_path: str) -> tuple[ModelShape, str]:
    """The model's shape and where it came from (its config.json, or the built-in table)."""
    config_file = Path(name_or_path) / "config.json"
    if config_file.is_file():
        return ModelShape.from_config(json.loads(config_file.read_text()), str(config_file)), str(config_file)
    known = KNOWN_CONFIGS.get(name_or_path.rstrip("/").rsplit("/", 1)[-1])
    if known is None:
        raise GrpoError(
            f"model.name_or_path={name_or_path}: no config.json there and not a built-in model "
            f"({', '.join(KNOWN_CONFIGS)}); point it at a local model directory"
        )
    return ModelShape.from_config(known, "built-in"), "built-in config"


def count_train_prompts(config: Config) -> tuple[int, str]:
    """The number of training prompts and where the number came from."""
    data = config.data
    if data.name == "harbor":
        return data.num_train, "data.num_train"
    from grpo_cli.data.loaders import load_examples

    where = data.train_path or f"{data.hf_path} split {data.train_split}"
    return len(load_examples(config, "train")), f"train rows of {where}"


@dataclass(frozen=True)
class ComputeBudget:
    steps: int
    completions: int
    generated_tokens: int
    tokens_per_pass: int  # prompt + completion tokens of every completion
    policy_passes: int
    reference_passes: int
    old_policy_passes: int

    @property
    def learner_tokens(self) -> int:
        return self.tokens_per_pass * (self.policy_passes + self.reference_passes + self.old_policy_passes)


def compute_budget(config: Config, train_prompts: int, mean_prompt: float, mean_completion: float) -> ComputeBudget:
    train, algorithm = config.train, config.algorithm
    steps = math.ceil(train_prompts * train.epochs / train.prompts_per_step)
    if train.max_steps is not None:
        steps = min(steps, train.max_steps)
    completions = steps * train.prompts_per_step * algorithm.group_size
    return ComputeBudget(
        steps=steps,
        completions=completions,
        generated_tokens=round(completions * mean_completion),
        tokens_per_pass=round(completions * (mean_prompt + mean_completion)),
        policy_passes=algorithm.num_iterations,
        reference_passes=int(algorithm.kl_coef > 0),
        old_policy_passes=int(algorithm.num_iterations > 1),
    )


@dataclass(frozen=True)
class MemoryEstimate:
    components: dict[str, int]  # bytes per component, in the order printed
    notes: dict[str, str]
    kv_cache_tokens: int  # tokens the sampler's KV cache holds
    phases_overlap: bool  # sampler memory stays allocated while the learner runs
    peak: int
    gpu: int

    @property
    def fits(self) -> bool:
        return self.peak <= self.gpu and self.kv_cache_tokens > 0


def lora_params(shape: ModelShape, rank: int, target_modules: list[str]) -> int:
    linears = shape.linears()
    for name in target_modules:
        if name not in linears:
            raise ConfigError(
                f"model.lora.target_modules: {name!r} is not a linear layer of this model; use some of {', '.join(linears)}"
            )
    return shape.num_layers * sum(rank * sum(linears[name]) for name in target_modules)


def activation_bytes(config: Config, shape: ModelShape, tokens: float, dtype_bytes: int, checkpointing: bool) -> int:
    """Activations saved for backward by `tokens` tokens (see the module docstring)."""
    lora = config.model.lora
    per_layer = (4 * shape.hidden_size + 2 * shape.num_heads * shape.head_dim + 2 * shape.num_kv_heads * shape.head_dim
                 + 4 * shape.intermediate_size + (lora.rank * len(lora.target_modules) if lora.enabled else 0))
    saved = shape.num_layers * shape.hidden_size + per_layer if checkpointing else shape.num_layers * per_layer
    return round(tokens * saved * dtype_bytes)


def estimate_memory(config: Config, shape: ModelShape, mean_prompt: float, gpu: int, nproc: int = 1) -> MemoryEstimate:
    """The memory of one GPU of `nproc` (module docstring)."""
    model, lora, sampler = config.model, config.model.lora, config.sampler
    b = DTYPE_BYTES[shape.dtype if model.dtype == "auto" else model.dtype]
    if nproc > 1:
        return _sharded(estimate_memory(config, shape, mean_prompt, gpu), config, shape, b, nproc)
    weights = shape.num_params * b
    if lora.enabled:
        components = {"policy weights": weights}
        notes = {"policy weights": f"{_count(shape.num_params)} parameters x {b} bytes"}
        components["reference"], notes["reference"] = 0, "none: the base model with the adapter disabled"
        trainable = lora_params(shape, lora.rank, lora.target_modules)
        components["LoRA parameters"] = trainable * MASTER_BYTES
        notes["LoRA parameters"] = f"{_count(trainable)} float32, rank {lora.rank} on {', '.join(lora.target_modules)}"
    else:
        trainable = shape.num_params
        components = {"policy weights": trainable * MASTER_BYTES}
        notes = {"policy weights": f"{_count(trainable)} parameters x 4 bytes: float32 master weights"}
        needs_reference = config.algorithm.kl_coef > 0
        components["reference"] = weights if needs_reference else 0
        notes["reference"] = f"a frozen copy in {b}-byte model.dtype" if needs_reference else "none: algorithm.kl_coef = 0"
    trainable_bytes = MASTER_BYTES
    components["gradients"] = trainable * trainable_bytes
    notes["gradients"] = f"{_count(trainable)} trainable parameters x {trainable_bytes} bytes"
    components["optimizer state"] = 2 * trainable * trainable_bytes
    notes["optimizer state"] = "AdamW: 2 moments per trainable parameter"
    resident = sum(components.values())

    padded = mean_prompt + sampler.max_new_tokens
    tokens = config.train.micro_batch_tokens or AUTO_MICRO_BATCH_COMPLETIONS * padded
    checkpointing = model.gradient_checkpointing
    components["activations"] = activation_bytes(config, shape, tokens, b, checkpointing)
    other = activation_bytes(config, shape, tokens, b, not checkpointing)
    notes["activations"] = (f"micro-batch of {tokens:g} tokens, gradient checkpointing "
                            f"{'on' if checkpointing else 'off'} ({'off' if checkpointing else 'on'}: {other / GiB:.1f} GiB)")
    components["logits"] = round(tokens * shape.vocab_size * 8)
    notes["logits"] = f"float32 logits and their gradient, vocab {shape.vocab_size}"
    if not lora.enabled and b < MASTER_BYTES:
        components["autocast copy"] = weights
        notes["autocast copy"] = f"the weights cast to {b}-byte model.dtype for forward and backward"
    learner = resident + components["activations"] + components["logits"] + components.get("autocast copy", 0)

    kv_per_token = shape.kv_bytes_per_token(b)
    if sampler.name == "vllm":
        components["vLLM weights"], notes["vLLM weights"] = weights, "its own copy, synced after each step"
        if sampler.kv_cache_gb is None:
            sampling = round(sampler.gpu_memory_utilization * gpu)
            kv_cache = max(sampling - weights, 0)
            notes["vLLM KV cache"] = f"sampler.gpu_memory_utilization {sampler.gpu_memory_utilization} x GPU - vLLM weights"
        else:
            kv_cache = round(sampler.kv_cache_gb * GiB)
            sampling = weights + kv_cache
            notes["vLLM KV cache"] = f"sampler.kv_cache_gb {sampler.kv_cache_gb:g}"
        components["vLLM KV cache"] = kv_cache
        phases_overlap = not sampler.enable_sleep_mode
    else:
        # sampler.batch_size null: the sampler takes as many as the free memory holds, at most a step's sequences.
        batch = sampler.batch_size or config.train.prompts_per_step * config.algorithm.group_size
        sampling = kv_cache = round(batch * padded * kv_per_token)
        components["generate KV cache"] = kv_cache
        notes["generate KV cache"] = f"{batch} sequences (sampler.batch_size {sampler.batch_size}) x {padded:g} tokens"
        phases_overlap = False
    peak = learner + sampling if phases_overlap else max(resident + sampling, learner)
    return MemoryEstimate(components, notes, kv_cache // kv_per_token, phases_overlap, peak, gpu)


def _sharded(single: MemoryEstimate, config: Config, shape: ModelShape, b: int, nproc: int) -> MemoryEstimate:
    """`single` (the one-process estimate) with the learner's state sharded over `nproc` GPUs by FSDP2."""
    components, notes = dict(single.components), dict(single.notes)
    shards = f"/ {nproc} GPUs (FSDP2 shards)"
    components["policy weights"] = shape.num_params * 4 // nproc
    notes["policy weights"] = f"{_count(shape.num_params)} parameters x 4 bytes (float32) {shards}"
    components["reference"] //= nproc
    if components["reference"]:
        notes["reference"] += f" {shards}"
    trainable = "LoRA parameters" if config.model.lora.enabled else None
    for name in filter(None, (trainable, "gradients", "optimizer state")):  # float32 already (master weights)
        components[name] = components[name] // nproc
        notes[name] += f" {shards}"
    # FSDP's mixed precision casts the layer being computed: the gathered layers below, not a whole copy.
    components.pop("autocast copy", None)
    notes.pop("autocast copy", None)
    layer = sum(n_in * n_out for n_in, n_out in shape.linears().values())
    embeddings = shape.num_params - shape.num_layers * layer
    components["gathered layers"] = (embeddings + 2 * layer) * 2
    notes["gathered layers"] = "bf16 embeddings + the layer computed and the one prefetched"
    components["sampler copy"] = shape.num_params * b
    notes["sampler copy"] = "each rank's unsharded policy copy for its sampler"
    resident = sum(size for name, size in components.items() if name not in ("activations", "logits") and not name.startswith(("vLLM", "generate")))
    learner = resident + components["activations"] + components["logits"]
    sampling = components.get("vLLM KV cache", 0) + components.get("vLLM weights", 0) + components.get("generate KV cache", 0)
    peak = learner + sampling if single.phases_overlap else max(resident + sampling, learner)
    return MemoryEstimate(components, notes, single.kv_cache_tokens, single.phases_overlap, peak, single.gpu)


def gpu_memory(gib: float | None) -> tuple[int, str]:
    """Total GPU memory in bytes and where the number came from."""
    if gib is not None:
        return round(gib * GiB), "--gpu-memory-gib"
    import torch

    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        return properties.total_memory, f"detected: {properties.name}"
    return round(DEFAULT_GPU_GIB * GiB), "assumed: the reference H100; set --gpu-memory-gib"


def _count(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:g}"


def plan_command(args: argparse.Namespace, config: Config) -> None:
    shape, shape_source = model_shape(config.model.name_or_path)
    train_prompts, prompts_source = count_train_prompts(config)
    gpu, gpu_source = gpu_memory(args.gpu_memory_gib)
    if args.mean_completion_tokens is None:
        mean_completion = config.sampler.max_new_tokens / 2
        completion_source = "assumed: sampler.max_new_tokens / 2; set --mean-completion-tokens"
    else:
        mean_completion, completion_source = args.mean_completion_tokens, "--mean-completion-tokens"
    if args.mean_prompt_tokens is None:
        mean_prompt, prompt_source = DEFAULT_MEAN_PROMPT_TOKENS, "assumed; set --mean-prompt-tokens"
    else:
        mean_prompt, prompt_source = args.mean_prompt_tokens, "--mean-prompt-tokens"
    budget = compute_budget(config, train_prompts, mean_prompt, mean_completion)
    nproc = args.nproc or int(os.environ.get("WORLD_SIZE", "1"))
    if nproc < 1:
        raise GrpoError(f"--nproc {nproc}: the number of GPUs must be >= 1")
    memory = estimate_memory(config, shape, mean_prompt, gpu, nproc)
    train, algorithm = config.train, config.algorithm

    print(f"plan for {config.recipe or 'the default config'}: {config.model.name_or_path} ({shape_source})")
    print("\ncompute")
    print(f"  train prompts      {train_prompts:,} ({prompts_source}) x {train.epochs:g} epochs")
    capped = ", capped by train.max_steps" if train.max_steps is not None else ""
    print(f"  steps              {budget.steps:,} of {train.prompts_per_step} prompts{capped}")
    print(f"  completions        {budget.completions:,} (G = {algorithm.group_size})")
    print(f"  mean prompt        {mean_prompt:g} tokens ({prompt_source})")
    print(f"  mean completion    {mean_completion:g} tokens ({completion_source})")
    print(f"  generated tokens   {budget.generated_tokens:,} ({_count(budget.generated_tokens)})")
    passes = [f"{budget.policy_passes} policy forward+backward"]
    if budget.reference_passes:
        passes.append("1 reference forward")
    if budget.old_policy_passes:
        passes.append("1 old-policy forward")
    print(f"  learner tokens     {budget.learner_tokens:,} ({_count(budget.learner_tokens)}): "
          f"{budget.tokens_per_pass:,} prompt+completion tokens x ({' + '.join(passes)})")

    per_gpu = f"per GPU of {nproc}, FSDP2; " if nproc > 1 else ""
    print(f"\nmemory (GiB; {per_gpu}GPU {gpu / GiB:.1f} GiB, {gpu_source})")
    for name, size in memory.components.items():
        print(f"  {name:<22}{size / GiB:>7.2f}  {memory.notes[name]}")
    if config.sampler.name == "vllm":
        sequences = memory.kv_cache_tokens / (mean_prompt + config.sampler.max_new_tokens)
        print(f"  the KV cache holds {memory.kv_cache_tokens:,} tokens = {sequences:,.0f} full-length sequences; "
              f"a step samples {train.prompts_per_step * algorithm.group_size:,}")
    phases = "learner and sampler at once" if memory.phases_overlap else "the larger of sampling and learning"
    print(f"  {'peak':<22}{memory.peak / GiB:>7.2f}  {phases}")
    if memory.fits:
        print(f"\nfits: {memory.peak / GiB:.1f} of {gpu / GiB:.1f} GiB, {(gpu - memory.peak) / GiB:.1f} GiB spare")
    elif memory.kv_cache_tokens == 0:
        print("\ndoes not fit: no room for a KV cache; raise sampler.gpu_memory_utilization")
    else:
        largest = max(memory.components, key=memory.components.get)
        print(f"\ndoes not fit: {memory.peak / GiB:.1f} GiB > {gpu / GiB:.1f} GiB; the largest part is {largest}")
