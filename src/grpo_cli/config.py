"""The typed configuration schema, validated before any model loads.

Hydra composes plain YAML (conf/ groups + a recipe + command-line overrides); `Config.from_dict`
turns the result into these dataclasses and rejects unknown keys, wrong types, out-of-range values and
inconsistent combinations with one-line errors that name the key, the value and what is allowed.

Batch sizes are named by what they count:
  train.prompts_per_step      prompts sampled per optimizer step
  completions per step      = train.prompts_per_step x algorithm.group_size
  train.micro_batch_size      completions per learner forward/backward (gradient accumulation)
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from grpo_cli.errors import ConfigError


def check(predicate, allowed: str) -> dict:
    """Field metadata: `predicate(value)` must hold; `allowed` ("must be > 0") completes the error line."""
    return {"check": (predicate, allowed)}


POSITIVE = check(lambda v: v > 0, "must be > 0")
NON_NEGATIVE = check(lambda v: v >= 0, "must be >= 0")
POSITIVE_OR_NONE = check(lambda v: v is None or v > 0, "must be > 0, or null")
FRACTION = check(lambda v: 0 <= v <= 1, "must be in [0, 1]")


@dataclass
class LoraConfig:
    enabled: bool = False
    rank: int = field(default=16, metadata=POSITIVE)
    alpha: float = field(default=32.0, metadata=POSITIVE)
    dropout: float = field(default=0.0, metadata=check(lambda v: 0 <= v < 1, "must be in [0, 1)"))
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class TinyModelConfig:
    """Shape of the tiny Llama that `grpo init-model` builds (head_dim = hidden/heads >= 64 for vLLM CPU)."""

    hidden_size: int = field(default=256, metadata=POSITIVE)
    num_layers: int = field(default=4, metadata=POSITIVE)
    num_heads: int = field(default=4, metadata=POSITIVE)
    intermediate_size: int = field(default=768, metadata=POSITIVE)
    vocab_size: int = field(default=512, metadata=check(lambda v: v >= 300, "must be >= 300 (256 bytes, specials, merges)"))
    max_position_embeddings: int = field(default=512, metadata=POSITIVE)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads or self.hidden_size // self.num_heads < 64:
            raise ConfigError(
                f"model.tiny.hidden_size={self.hidden_size}, model.tiny.num_heads={self.num_heads}: head_dim = "
                "hidden_size / num_heads must be a whole number >= 64 (vLLM on CPU needs it)"
            )


@dataclass
class ModelConfig:
    name_or_path: str = ""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)


@dataclass
class SamplerConfig:
    name: Literal["hf", "vllm"] = "hf"
    temperature: float = field(default=1.0, metadata=NON_NEGATIVE)
    top_p: float = field(default=1.0, metadata=check(lambda v: 0 < v <= 1, "must be in (0, 1]"))
    top_k: int = field(default=0, metadata=check(lambda v: v >= 0, "must be >= 0 (0 turns it off)"))
    max_new_tokens: int = field(default=256, metadata=POSITIVE)
    batch_size: int = field(default=64, metadata=POSITIVE)
    gpu_memory_utilization: float = field(default=0.5, metadata=check(lambda v: 0 < v <= 1, "must be in (0, 1]"))
    # The vLLM engine shares the training process (weights are synced in place), so it runs on one device.
    tensor_parallel_size: int = field(default=1, metadata=check(lambda v: v == 1, "must be 1: the colocated vLLM engine runs in the training process"))
    max_model_len: int = field(default=2048, metadata=POSITIVE)
    enable_sleep_mode: bool = False
    kv_cache_gb: Optional[float] = field(default=None, metadata=POSITIVE_OR_NONE)  # null: sized by gpu_memory_utilization


@dataclass
class RewardConfig:
    """reward = correctness_weight * correct + format bonus + length penalty + custom (verifier/rewards.py)."""

    correctness_weight: float = 1.0
    format_bonus: float = field(default=0.0, metadata=NON_NEGATIVE)  # added when the answer is well formed
    format_anneal_steps: int = field(default=0, metadata=check(lambda v: v >= 0, "must be >= 0 (0: no anneal)"))
    length_penalty: float = field(default=0.0, metadata=NON_NEGATIVE)  # subtracted per 1,000 characters
    custom: Optional[str] = None  # "package.module:function", called as fn(completion, answer) -> float
    custom_weight: float = 1.0


@dataclass
class SandboxConfig:
    """Limits for each run of a candidate program (verifier.name=code)."""

    wall_time_s: float = field(default=5.0, metadata=POSITIVE)
    cpu_time_s: float = field(default=5.0, metadata=POSITIVE)
    memory_mb: int = field(default=512, metadata=POSITIVE)
    max_processes: int = field(default=32, metadata=POSITIVE)


@dataclass
class VerifierConfig:
    name: Literal["math", "code"] = "math"
    extract: Literal["final_line", "boxed", "gsm8k", "answer_is", "last_number", "auto"] = "auto"
    marker: str = field(default="FINAL:", metadata=check(lambda v: bool(v.strip()), "must not be empty, e.g. FINAL:"))
    # Wall clock per check; for code, per completion: all its tests together.
    timeout_s: float = field(default=1.0, metadata=POSITIVE)
    # How close a decimal must be to a value without finite decimal expansion (1/3, pi); integers match exactly.
    rel_tol: float = field(default=1e-6, metadata=NON_NEGATIVE)
    num_workers: int = field(default=2, metadata=POSITIVE)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)


@dataclass
class OptimizerConfig:
    name: Literal["adamw"] = "adamw"
    lr: float = field(default=1e-6, metadata=check(lambda v: v > 0, "the learning rate must be > 0"))
    weight_decay: float = field(default=0.0, metadata=NON_NEGATIVE)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = field(default=1e-8, metadata=POSITIVE)
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = field(default=0, metadata=check(lambda v: v >= 0, "must be >= 0"))
    max_grad_norm: float = field(default=1.0, metadata=POSITIVE)


@dataclass
class DataConfig:
    name: Literal["harbor", "jsonl", "gsm8k"] = "harbor"
    train_path: str = ""
    eval_path: str = ""
    prompt_field: str = "question"
    answer_field: str = "answer"
    solution_field: str = "solution"
    prompt_template: str = field(default="{prompt}\n", metadata=check(lambda v: "{prompt}" in v, "must contain {prompt}, where the question goes"))
    use_chat_template: bool = False
    num_train: int = field(default=28000, metadata=POSITIVE)
    num_eval: int = field(default=2000, metadata=POSITIVE)
    difficulty: list[int] = field(default_factory=lambda: [1, 2, 3], metadata=check(lambda v: v and set(v) <= {1, 2, 3}, "must list harbor levels from 1, 2, 3"))
    seed: int = 1234
    num_select: int = field(default=200, metadata={"help": "prompts of the select split, which chooses the best checkpoint (harbor: generated apart from train and eval; jsonl/gsm8k without data.select_path: the last rows of the train file, not trained on)", **POSITIVE})
    select_path: str = field(default="", metadata={"help": "jsonl/gsm8k: a JSONL file for the select split (\"\": carve data.num_select rows off the train file)"})


@dataclass
class SftConfig:
    """`grpo sft`: supervised cold start on the train split's worked solutions, loss on solution tokens only."""

    init_from: str = ""  # the model SFT starts from ("" = model.name_or_path); `grpo init-model` writes here
    output_dir: str = ""  # where the SFT model is saved ("" = <train.output_dir>/sft)
    steps: int = field(default=300, metadata=POSITIVE)
    batch_size: int = field(default=32, metadata=POSITIVE)
    lr: float = field(default=1e-3, metadata=POSITIVE)
    warmup_steps: int = field(default=20, metadata=NON_NEGATIVE)
    eval_every: int = field(default=0, metadata=check(lambda v: v >= 0, "must be >= 0 (0: only at the end)"))
    log_every: int = field(default=20, metadata=POSITIVE)


@dataclass
class AlgorithmConfig:
    group_size: int = field(default=8, metadata=check(lambda v: v >= 2, "G must be >= 2: advantages compare completions within a group"))
    kl_coef: float = field(default=0.0, metadata=check(lambda v: v >= 0, "the KL coefficient must be >= 0"))
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    clip_eps_low: float = field(default=0.2, metadata=NON_NEGATIVE)
    clip_eps_high: float = field(default=0.2, metadata=NON_NEGATIVE)
    loss_agg: Literal["seq_mean", "token_mean", "seq_sum_norm"] = "seq_mean"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    std_eps: float = field(default=1e-4, metadata=POSITIVE)
    importance_level: Literal["token", "sequence"] = "token"
    mask_truncated: bool = False
    filter_zero_variance: bool = False
    num_iterations: int = field(default=1, metadata=POSITIVE)
    tis_cap: Optional[float] = field(default=None, metadata=POSITIVE_OR_NONE)


@dataclass
class TrainConfig:
    output_dir: str = ""
    seed: int = 0
    epochs: float = field(default=1.0, metadata=check(lambda v: v > 0, "epochs must be > 0 (fractions such as 1.5 allowed)"))
    max_steps: Optional[int] = field(default=None, metadata=POSITIVE_OR_NONE)
    prompts_per_step: int = field(default=16, metadata=POSITIVE)
    micro_batch_size: int = field(default=8, metadata=POSITIVE)
    eval_every: int = field(default=0, metadata=check(lambda v: v >= 0, "must be >= 0 (0: only at start and end)"))
    save_every: int = field(default=10, metadata=POSITIVE)
    select_checkpoint_by: Literal["eval_pass@1"] = "eval_pass@1"
    merge_with_reference: Optional[float] = field(default=None, metadata=check(lambda v: v is None or 0 <= v <= 1, "must be a weight in [0, 1], or null"))
    max_nonfinite_steps: int = field(default=3, metadata=POSITIVE)
    log_groups_per_step: int = field(default=2, metadata=check(lambda v: v >= 0, "must be >= 0"))
    max_initial_mismatch: float = field(default=0.05, metadata={"help": "warn when step-1 sampler/learner log-prob mismatch exceeds this (nats per token)", **POSITIVE})


@dataclass
class EvalConfig:
    pass_at: list[int] = field(default_factory=lambda: [1, 12])
    num_samples: Optional[int] = field(default=None, metadata=POSITIVE_OR_NONE)
    num_prompts: Optional[int] = field(default=None, metadata=POSITIVE_OR_NONE)
    temperature: Optional[float] = field(default=None, metadata=check(lambda v: v is None or v >= 0, "must be >= 0, or null (use sampler.temperature)"))
    output: str = ""


@dataclass
class Config:
    recipe: Optional[str] = None
    description: str = ""
    resume: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def completions_per_step(self) -> int:
        return self.train.prompts_per_step * self.algorithm.group_size

    @property
    def eval_num_samples(self) -> int:
        return self.eval.num_samples or max(self.eval.pass_at)

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        config = _build(cls, data, "")
        config.validate()
        return config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if not self.train.output_dir:
            self.train.output_dir = f"runs/{self.recipe or 'default'}"
        if self.completions_per_step % self.train.micro_batch_size:
            raise ConfigError(
                f"train.micro_batch_size={self.train.micro_batch_size}: must divide the completions per step, "
                f"train.prompts_per_step x algorithm.group_size = {self.train.prompts_per_step} x "
                f"{self.algorithm.group_size} = {self.completions_per_step}"
            )
        for k in self.eval.pass_at:
            if k < 1 or k > self.eval_num_samples:
                raise ConfigError(
                    f"eval.pass_at={self.eval.pass_at}: each k must be in [1, n] with n = eval.num_samples = {self.eval_num_samples}"
                )
        if len(self.optimizer.betas) != 2 or not all(0 <= b < 1 for b in self.optimizer.betas):
            raise ConfigError(f"optimizer.betas={self.optimizer.betas}: needs two numbers in [0, 1)")
        if self.sampler.temperature == 0 and self.algorithm.group_size > 1:
            warnings.warn(
                f"sampler.temperature=0 (greedy) with algorithm.group_size={self.algorithm.group_size}: every completion "
                "in a group is identical, so every advantage is 0 and GRPO learns nothing. Use temperature > 0.",
                stacklevel=2,
            )


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Return `value` as type `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        inner = [t for t in options if t is not type(None)]
        return _convert(inner[0], value, key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}: must be one of {', '.join(map(str, allowed))}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: must be a list, e.g. [1, 2]")
        (item_type,) = typing.get_args(tp)
        return [_convert(item_type, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r}: must be a mapping of {_type_name(tp)} settings")
        return _build(tp, value, key + ".")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r}: must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r}: must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r}: must be a string")
        return value
    raise TypeError(f"unsupported config type {tp} at {key}")


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"unknown key {prefix}{key}{hint}")
    values = {}
    for name, value in data.items():
        key = prefix + name
        converted = _convert(hints[name], value, key)
        rule = fields[name].metadata.get("check")
        if rule and converted is not None and not rule[0](converted):
            raise ConfigError(f"{key}={value!r}: {rule[1]}")
        values[name] = converted
    return cls(**values)


def suggest_key(dotted: str) -> str:
    """`algorithm.group_sise` -> ' Did you mean group_size?' (or '' when nothing is close)."""
    cls: Any = Config
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        names = {f.name: f for f in dataclasses.fields(cls)}
        if part not in names:
            close = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
            return f"; did you mean {'.'.join(parts[:i] + close)}?" if close else f"; known keys: {', '.join(names)}"
        tp = typing.get_type_hints(cls)[part]
        if not dataclasses.is_dataclass(tp):
            return ""
        cls = tp
    return ""
