"""The typed configuration schema, validated before any model loads.

Hydra composes plain YAML (conf/ groups + a recipe + command-line overrides); `Config.from_dict`
turns the result into these dataclasses and rejects unknown keys, wrong types, out-of-range values and
inconsistent combinations with one-line errors that name the key, the value and what is allowed.

Batch sizes are named by what they count:
  train.prompts_per_step      prompts sampled per optimizer step
  completions per step      = train.prompts_per_step x algorithm.group_size
  train.micro_batch_tokens    padded tokens per learner forward/backward (gradient accumulation)
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import types
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from grpo_cli.errors import ConfigError


def check(predicate, allowed: str) -> dict:
    """Field metadata: `predicate(value)` must hold; `allowed` ("must be > 0") completes the error line."""
    return {"check": (predicate, allowed)}


POSITIVE = check(lambda v: v > 0, "must be > 0")
NON_NEGATIVE = check(lambda v: v >= 0, "must be >= 0")
POSITIVE_OR_NONE = check(lambda v: v is None or v > 0, "must be > 0, or null")
FRACTION = check(lambda v: 0 <= v <= 1, "must be in [0, 1]")


def registered(module: str, registry: str) -> dict:
    """Field metadata: the value must name a function of the Registry `registry` in grpo_cli.algo.`module`
    (imported when a config is checked: algo/ imports this module)."""
    return {"registry": lambda: getattr(importlib.import_module(f"grpo_cli.algo.{module}"), registry)}


@dataclass
class LoraConfig:
    """LoRA adapters (peft): only they train; the reference policy is the model with the adapter disabled."""

    enabled: bool = field(default=False, metadata={"help": "train LoRA adapters instead of every weight"})
    rank: int = field(default=16, metadata={"help": "adapter rank r", **POSITIVE})
    alpha: float = field(default=32.0, metadata={"help": "adapter scaling alpha (the update is scaled by alpha / rank)", **POSITIVE})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter input", **check(lambda v: 0 <= v < 1, "must be in [0, 1)")})
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata={"help": "names of the weight layers that get adapters (matched by module name)"},
    )


@dataclass
class TinyModelConfig:
    """Shape of the tiny Llama that `grpo init-model` builds (head_dim = hidden/heads >= 64 for vLLM CPU)."""

    hidden_size: int = field(default=256, metadata={"help": "hidden width of the tiny Llama", **POSITIVE})
    num_layers: int = field(default=4, metadata={"help": "decoder layers of the tiny Llama", **POSITIVE})
    num_heads: int = field(default=4, metadata={"help": "attention heads; hidden_size / num_heads must be >= 64", **POSITIVE})
    intermediate_size: int = field(default=768, metadata={"help": "MLP width of the tiny Llama", **POSITIVE})
    vocab_size: int = field(
        default=512,
        metadata={"help": "size of the locally trained BPE vocabulary", **check(lambda v: v >= 300, "must be >= 300 (256 bytes, specials, merges)")},
    )
    max_position_embeddings: int = field(default=512, metadata={"help": "context length of the tiny Llama (prompt + completion)", **POSITIVE})

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads or self.hidden_size // self.num_heads < 64:
            raise ConfigError(
                f"model.tiny.hidden_size={self.hidden_size}, model.tiny.num_heads={self.num_heads}: head_dim = "
                "hidden_size / num_heads must be a whole number >= 64 (vLLM on CPU needs it)"
            )


@dataclass
class ModelConfig:
    name_or_path: str = field(default="", metadata={"help": "the starting model: a model directory, a LoRA checkpoint directory, a .gguf file (converted once into $GRPO_CACHE_DIR/gguf, default ~/.cache/grpo-cli/gguf), or a hub id"})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(default="auto", metadata={"help": "weight dtype; auto is bfloat16 on CUDA, float32 on CPU"})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={"help": "where the learner runs; auto is CUDA when present"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in backward to save memory"})
    lora: LoraConfig = field(default_factory=LoraConfig, metadata={"help": "LoRA adapters"})
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig, metadata={"help": "shape of the model `grpo init-model` builds"})


@dataclass
class SamplerConfig:
    name: Literal["hf", "vllm"] = field(default="hf", metadata={"help": "generation engine: transformers generate (hf) or a colocated vLLM engine"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature; log-probs are log_softmax(logits / T)", **NON_NEGATIVE})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling: keep the smallest token set with this probability", **check(lambda v: 0 < v <= 1, "must be in (0, 1]")})
    top_k: int = field(default=0, metadata={"help": "keep the k most likely tokens (0: all)", **check(lambda v: v >= 0, "must be >= 0 (0 turns it off)")})
    max_new_tokens: int = field(default=256, metadata={"help": "generation budget per completion, in tokens", **POSITIVE})
    batch_size: Optional[int] = field(
        default=None, metadata={"help": "hf: sequences (prompts x G) per generate call; null sizes it by free memory", **POSITIVE_OR_NONE}
    )
    gpu_memory_utilization: float = field(
        default=0.5, metadata={"help": "vllm: fraction of device memory the engine may take", **check(lambda v: 0 < v <= 1, "must be in (0, 1]")}
    )
    # The vLLM engine shares the training process (weights are synced in place), so it runs on one device.
    tensor_parallel_size: int = field(
        default=1,
        metadata={"help": "vllm: tensor-parallel degree", **check(lambda v: v == 1, "must be 1: the colocated vLLM engine runs in the training process")},
    )
    max_model_len: int = field(default=2048, metadata={"help": "vllm: longest prompt + completion the engine holds", **POSITIVE})
    enable_sleep_mode: bool = field(default=False, metadata={"help": "vllm, GPU only: free the engine's memory while the learner trains"})
    kv_cache_gb: Optional[float] = field(
        default=None, metadata={"help": "vllm: GiB for the KV cache; null sizes it from gpu_memory_utilization", **POSITIVE_OR_NONE}
    )


@dataclass
class RewardConfig:
    """reward = correctness_weight * correct + format bonus + length penalty + custom (verifier/rewards.py)."""

    correctness_weight: float = field(default=1.0, metadata={"help": "weight of the checker's verdict (1/0 math, passed/total code)"})
    format_bonus: float = field(default=0.0, metadata={"help": "added when the answer is well formed (one marker line, the last)", **NON_NEGATIVE})
    format_anneal_steps: int = field(
        default=0, metadata={"help": "the format bonus fades linearly to 0 at this step", **check(lambda v: v >= 0, "must be >= 0 (0: no anneal)")}
    )
    length_penalty: float = field(default=0.0, metadata={"help": "subtracted per 1,000 characters of completion", **NON_NEGATIVE})
    custom: Union[str, list[str], None] = field(
        default=None,
        metadata={"help": "reward functions package.module:function, one or a list; each fn(completion, answer) -> float, or TRL's fn(prompts, completions, completion_ids, **columns) -> list of float or None (see Your data, your rewards)"},
    )
    custom_weight: Union[float, list[float]] = field(
        default=1.0, metadata={"help": "weight of the custom reward; with a list of functions, one weight for all or a list with one each (TRL's reward_weights)"}
    )
    # per_component is TRL's multi-objective normalization (algo/rewards.py).
    normalize: Literal["none", "per_component"] = field(default="none", metadata={"help": "per_component: each component normalized within its group, then weighted and summed; none: summed as they are"})

    def __post_init__(self) -> None:
        if isinstance(self.custom_weight, list) and (not isinstance(self.custom, list) or len(self.custom) != len(self.custom_weight)):
            functions = len(self.custom) if isinstance(self.custom, list) else int(self.custom is not None)
            raise ConfigError(
                f"verifier.rewards.custom_weight={self.custom_weight}: a list needs one weight per function of the "
                f"verifier.rewards.custom list, which has {functions}"
            )


@dataclass
class SandboxConfig:
    """Limits for each run of a candidate program (verifier.name=code)."""

    wall_time_s: float = field(default=5.0, metadata={"help": "wall-clock limit per program run, seconds", **POSITIVE})
    cpu_time_s: float = field(default=5.0, metadata={"help": "CPU-time limit per program run, seconds", **POSITIVE})
    memory_mb: int = field(default=512, metadata={"help": "address-space limit per program run, MiB", **POSITIVE})
    max_processes: int = field(default=32, metadata={"help": "process-count limit per program run", **POSITIVE})


@dataclass
class VerifierConfig:
    name: Literal["math", "code"] = field(default="math", metadata={"help": "math answers or code run against tests"})
    extract: Literal["final_line", "boxed", "gsm8k", "answer_is", "last_number", "auto"] = field(
        default="auto", metadata={"help": "where the answer is read from a completion (see Verifiers)"}
    )
    marker: str = field(
        default="FINAL:",
        metadata={"help": "final_line: the line prefix that introduces the answer", **check(lambda v: bool(v.strip()), "must not be empty, e.g. FINAL:")},
    )
    timeout_s: float = field(default=1.0, metadata={"help": "wall clock per check (code: per completion, all its tests)", **POSITIVE})
    rel_tol: float = field(
        default=1e-6, metadata={"help": "how close a decimal must be to a value with no finite decimal expansion (1/3, pi)", **NON_NEGATIVE}
    )
    num_workers: int = field(default=2, metadata={"help": "verifier worker processes", **POSITIVE})
    self_test_min: float = field(
        default=0.99,
        metadata={"help": "grpo train stops unless this fraction of the training data's gold answers and reference solutions score 1", **FRACTION},
    )
    rewards: RewardConfig = field(default_factory=RewardConfig, metadata={"help": "how a verdict becomes a reward"})
    sandbox: SandboxConfig = field(default_factory=SandboxConfig, metadata={"help": "limits of the code sandbox"})


@dataclass
class OptimizerConfig:
    name: Literal["adamw"] = field(default="adamw", metadata={"help": "the optimizer of the trainable weights"})
    lr: float = field(default=1e-6, metadata={"help": "peak learning rate", **check(lambda v: v > 0, "the learning rate must be > 0")})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay", **NON_NEGATIVE})
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata={"help": "AdamW betas, two numbers in [0, 1)"})
    eps: float = field(default=1e-8, metadata={"help": "AdamW epsilon in the denominator", **POSITIVE})
    schedule: Literal["constant", "linear", "cosine"] = field(default="constant", metadata={"help": "learning-rate shape after warmup: constant, or falling to 0 at the last step, linearly or as a cosine"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warmup over this many training steps", **NON_NEGATIVE})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradients are clipped to this global norm", **POSITIVE})


@dataclass
class DataConfig:
    name: Literal["harbor", "hf", "jsonl", "gsm8k"] = field(
        default="harbor",
        metadata={"help": "the dataset: generated Harbor problems; hf: your files or a Hub dataset, read by the datasets library; jsonl: hf with every file read as JSON lines; gsm8k: hf with GSM8K's `#### answer`"},
    )
    train_path: str = field(default="", metadata={"help": "hf/jsonl/gsm8k: the train split's file or folder (parquet, json, jsonl, csv, arrow by suffix, or a save_to_disk folder); \"\": data.hf_path's data.train_split"})
    eval_path: str = field(default="", metadata={"help": "hf/jsonl/gsm8k: the eval split's file or folder, as data.train_path; \"\": data.hf_path's data.eval_split"})
    hf_path: str = field(default="", metadata={"help": "hf/jsonl/gsm8k: a Hub dataset id (or a local folder laid out like one) for the splits whose *_path is unset, e.g. openai/gsm8k"})
    hf_name: str = field(default="", metadata={"help": "the Hub dataset's configuration name, e.g. main (\"\": its default)"})
    train_split: str = field(default="train", metadata={"help": "the split of data.hf_path (or of a save_to_disk DatasetDict) that trains"})
    eval_split: str = field(default="test", metadata={"help": "the split of data.hf_path (or of a save_to_disk DatasetDict) that evaluates"})
    select_split: str = field(default="", metadata={"help": "the split of data.hf_path that chooses the best checkpoint (\"\": carve data.num_select rows off the train split)"})
    prompt_field: str = field(default="question", metadata={"help": "the row field holding the question: text, or chat messages [{role, content}, ...] rendered by the chat template"})
    answer_field: str = field(default="answer", metadata={"help": "the row field holding the reference answer"})
    solution_field: str = field(default="solution", metadata={"help": "the row field holding a worked solution (SFT): text, or an assistant message; a chat prompt ending in an assistant turn supplies it too"})
    prompt_template: str = field(
        default="{prompt}\n",
        metadata={"help": "how a question becomes the prompt text", **check(lambda v: "{prompt}" in v, "must contain {prompt}, where the question goes")},
    )
    use_chat_template: bool = field(default=False, metadata={"help": "wrap the prompt in the tokenizer's chat template as a user turn"})
    num_train: int = field(default=28000, metadata={"help": "harbor: train problems generated", **POSITIVE})
    num_eval: int = field(default=2000, metadata={"help": "harbor: eval problems generated", **POSITIVE})
    difficulty: list[int] = field(
        default_factory=lambda: [1, 2, 3],
        metadata={"help": "harbor: the levels to generate", **check(lambda v: v and set(v) <= {1, 2, 3}, "must list harbor levels from 1, 2, 3")},
    )
    seed: int = field(default=1234, metadata={"help": "harbor: generator seed"})
    difficulty_steps: list[int] = field(
        default_factory=list,
        metadata={"help": "harbor curriculum: the training step at which each level of data.difficulty is first drawn, e.g. [0, 50, 100] (empty: all from the start)"},
    )
    skip_solved: float = field(
        default=0.0, metadata={"help": "set aside for this many epochs a prompt whose latest group was all correct (0: never)", **NON_NEGATIVE}
    )
    skip_unsolved: float = field(
        default=0.0, metadata={"help": "set aside for this many epochs a prompt whose latest group was all wrong (0: never)", **NON_NEGATIVE}
    )
    num_select: int = field(default=200, metadata={"help": "prompts of the select split, which chooses the best checkpoint (harbor: generated apart from train and eval; otherwise, without data.select_path or data.select_split: the last rows of the train split, not trained on)", **POSITIVE})
    select_path: str = field(default="", metadata={"help": "hf/jsonl/gsm8k: the select split's file or folder, as data.train_path (\"\": data.select_split, else carved off the train split)"})
    tool_solutions: float = field(
        default=0.0, metadata={"help": "harbor level 1: share of worked solutions that make one tagged calculator call, with its output (environment=calculator)", **check(lambda v: 0 <= v <= 1, "must be in [0, 1]")}
    )


@dataclass
class SftConfig:
    """`grpo sft`: supervised cold start on the train split's worked solutions, loss on solution tokens only."""

    init_from: str = field(default="", metadata={"help": "the model SFT starts from (empty: model.name_or_path); `grpo init-model` writes here"})
    output_dir: str = field(default="", metadata={"help": "where the SFT model is saved (empty: <train.output_dir>/sft)"})
    steps: int = field(default=300, metadata={"help": "SFT optimizer steps", **POSITIVE})
    batch_size: int = field(default=32, metadata={"help": "sequences per step", **POSITIVE})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (cosine decay to 0)", **POSITIVE})
    warmup_steps: int = field(default=20, metadata={"help": "linear warmup steps", **NON_NEGATIVE})
    eval_every: int = field(default=0, metadata={"help": "evaluate every N steps", **check(lambda v: v >= 0, "must be >= 0 (0: only at the end)")})
    log_every: int = field(default=20, metadata={"help": "print the loss every N steps", **POSITIVE})


# The advantage estimators that optimize pass@k for algorithm.pass_k (algo/advantages.py).
PASS_K_ESTIMATORS = ("passk", "pkpo")


@dataclass
class AlgorithmConfig:
    group_size: int = field(
        default=8,
        metadata={"help": "G, completions per prompt", **check(lambda v: v >= 2, "G must be >= 2: advantages compare completions within a group")},
    )
    advantage: str = field(
        default="grpo", metadata={"help": "advantage estimator, a function registered in algo/advantages.py", **registered("advantages", "ADVANTAGE_ESTIMATORS")}
    )
    policy_loss: str = field(
        default="ppo_clip", metadata={"help": "per-token policy loss, a function registered in algo/loss.py", **registered("loss", "POLICY_LOSSES")}
    )
    kl_coef: float = field(default=0.0, metadata={"help": "weight of the KL penalty to the reference (0: no reference pass)", **check(lambda v: v >= 0, "the KL coefficient must be >= 0")})
    kl_estimator: str = field(default="k3", metadata={"help": "per-token KL estimator (Schulman's k1, k2, k3), registered in algo/kl.py", **registered("kl", "KL_ESTIMATORS")})
    clip_eps_low: float = field(default=0.2, metadata={"help": "the ratio is clipped below at 1 - clip_eps_low", **NON_NEGATIVE})
    clip_eps_high: float = field(default=0.2, metadata={"help": "the ratio is clipped above at 1 + clip_eps_high (clip-higher: > low)", **NON_NEGATIVE})
    dual_clip_c: float = field(
        default=3.0, metadata={"help": "dual_clip: a token with A < 0 loses at most -c A (ratio above c: no gradient)", **check(lambda v: v > 1, "must be > 1")}
    )
    loss_agg: str = field(
        default="seq_mean",
        metadata={
            "help": "how token losses are averaged: per sequence (GRPO), per token (DAPO), by sampler.max_new_tokens (Dr. GRPO)",
            **registered("loss", "LOSS_AGGREGATIONS"),
        },
    )
    pass_k: int = field(
        default=1,
        metadata={"help": "advantage=passk|pkpo: the k of the pass@k they optimize, 1 <= k <= group_size", **check(lambda v: v >= 1, "must be >= 1")},
    )
    pass_k_anneal_steps: int = field(
        default=0,
        metadata={"help": "advantage=passk|pkpo: optimize pass@pass_k for this many steps, then pass@1 (PKPO's k annealing; 0: pass@pass_k throughout)", **NON_NEGATIVE},
    )
    scale_rewards: Literal["group", "batch", "none"] = field(default="group", metadata={"help": "advantage=grpo: advantages divided by the group's std, the batch's, or not at all"})
    std_eps: float = field(default=1e-4, metadata={"help": "added to the std before dividing", **POSITIVE})
    importance_level: Literal["token", "sequence"] = field(default="token", metadata={"help": "one ratio per token (GRPO) or per sequence (GSPO)"})
    mask_truncated: bool = field(default=False, metadata={"help": "drop completions that hit max_new_tokens from the loss"})
    filter_zero_variance: bool = field(default=False, metadata={"help": "drop groups whose rewards are all equal (DAPO dynamic sampling)"})
    max_resample_rounds: int = field(
        default=0,
        metadata={"help": "with filter_zero_variance: sample up to this many more batches of prompts until the step holds train.prompts_per_step groups whose rewards differ (DAPO)", **NON_NEGATIVE},
    )
    overlong_buffer: int = field(
        default=0,
        metadata={"help": "DAPO soft overlong punishment: the reward falls linearly by up to 1 over the last this-many tokens of sampler.max_new_tokens (0: off)", **NON_NEGATIVE},
    )
    entropy_mask_top: float = field(
        default=1.0,
        metadata={"help": "policy loss only on this fraction of the batch's tokens with the highest entropy (1: all)", **check(lambda v: 0 < v <= 1, "must be in (0, 1]")},
    )
    clip_cov_frac: float = field(
        default=0.0,
        metadata={"help": "Clip-Cov: this fraction of the batch's loss tokens, drawn among those whose covariance of log-prob and advantage lies in (clip_cov_low, clip_cov_high), lose their policy gradient (0: off; the paper: 2e-4)", **FRACTION},
    )
    clip_cov_low: float = field(default=1.0, metadata={"help": "Clip-Cov: tokens with a covariance above this may be drawn"})
    clip_cov_high: float = field(default=5.0, metadata={"help": "Clip-Cov: tokens with a covariance below this may be drawn"})
    entropy_coef: float = field(default=0.0, metadata={"help": "entropy bonus: this times the policy's per-token entropy is subtracted from the loss", **NON_NEGATIVE})
    num_iterations: int = field(default=1, metadata={"help": "mu, optimizer updates per generation batch", **POSITIVE})
    tis_cap: Optional[float] = field(
        default=None, metadata={"help": "truncated importance sampling against the sampler's log-probs, capped at this weight", **POSITIVE_OR_NONE}
    )


# train.micro_batch_tokens=null: the budget of this many completions of the step's longest prompt + completion.
AUTO_MICRO_BATCH_COMPLETIONS = 8


@dataclass
class TrainConfig:
    output_dir: str = field(default="", metadata={"help": "the run directory (empty: runs/<recipe>)"})
    seed: int = field(default=0, metadata={"help": "seed of sampling, data order and initialization"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the train prompts", **check(lambda v: v > 0, "epochs must be > 0 (fractions such as 1.5 allowed)")})
    max_steps: Optional[int] = field(default=None, metadata={"help": "stop after this many steps (null: epochs decide)", **POSITIVE_OR_NONE})
    prompts_per_step: int = field(default=16, metadata={"help": "prompts sampled per optimizer step", **POSITIVE})
    micro_batch_tokens: Optional[int] = field(
        default=None,
        metadata={"help": f"padded tokens per learner forward/backward, completions packed by length (null: {AUTO_MICRO_BATCH_COMPLETIONS} completions of the step's longest prompt + completion)", **POSITIVE_OR_NONE},
    )
    eval_every: int = field(default=0, metadata={"help": "evaluate every N steps", **check(lambda v: v >= 0, "must be >= 0 (0: only at start and end)")})
    save_every: int = field(default=10, metadata={"help": "checkpoint every N steps (and after every eval)", **POSITIVE})
    select_checkpoint_by: Literal["eval_pass@1"] = field(default="eval_pass@1", metadata={"help": "what picks the best checkpoint"})
    merge_with_reference: Optional[float] = field(
        default=None,
        metadata={"help": "at the end write w x best + (1 - w) x starting model", **check(lambda v: v is None or 0 <= v <= 1, "must be a weight in [0, 1], or null")},
    )
    max_nonfinite_steps: int = field(default=3, metadata={"help": "stop after this many NaN/inf steps in a row", **POSITIVE})
    max_retention_drift: float = field(
        default=1.10,
        metadata={"help": "warn when eval retention/ratio (policy NLL / starting model NLL on eval.retention_path) exceeds this", **check(lambda v: v >= 1, "must be >= 1 (1.10 warns at 10% higher NLL than the starting model)")},
    )
    log_groups_per_step: int = field(default=2, metadata={"help": "whole groups written to samples.jsonl per step", **NON_NEGATIVE})
    preflight: bool = field(default=False, metadata={"help": "run grpo preflight's checks before step 1 (a report; the run goes on)"})
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = field(
        default_factory=list, metadata={"help": "also log to these (local files in the run dir; each an optional extra)"}
    )
    max_initial_mismatch: float = field(default=0.05, metadata={"help": "warn when step-1 sampler/learner log-prob mismatch exceeds this (nats per token)", **POSITIVE})
    dist_timeout_s: float = field(default=600.0, metadata={"help": "torchrun: how long a rank waits for the others before the run fails (a dead rank ends the run)", **POSITIVE})
    async_steps: int = field(
        default=0,
        metadata={"help": "1: a sampler process samples and verifies step k+1 while the learner trains on step k (needs algorithm.tis_cap); 0: synchronous", **check(lambda v: v in (0, 1), "must be 0 or 1")},
    )


@dataclass
class EvalConfig:
    pass_at: list[int] = field(default_factory=lambda: [1, 12], metadata={"help": "the k of each reported pass@k"})
    num_samples: Optional[int] = field(default=None, metadata={"help": "n completions per prompt (null: max(pass_at))", **POSITIVE_OR_NONE})
    num_prompts: Optional[int] = field(default=None, metadata={"help": "eval prompts (null: the whole eval split)", **POSITIVE_OR_NONE})
    temperature: Optional[float] = field(
        default=None,
        metadata={"help": "eval sampling temperature (null: sampler.temperature)", **check(lambda v: v is None or v >= 0, "must be >= 0, or null (use sampler.temperature)")},
    )
    output: str = field(default="", metadata={"help": "grpo eval: the JSON file (empty: <train.output_dir>/eval.json)"})
    retention_path: str = field(
        default="", metadata={"help": "JSONL of general prompts with reference responses: every eval logs retention/nll, nll_start, ratio (empty: off)"}
    )


@dataclass
class PreflightConfig:
    num_prompts: int = field(default=32, metadata={"help": "training prompts grpo preflight samples G times each", **POSITIVE})


@dataclass
class EnvironmentConfig:
    """Multi-turn rollouts (rollout.py): the model calls tools between turns and reads their outputs."""

    name: Literal["none", "python", "calculator", "custom"] = field(
        default="none", metadata={"help": "none: one completion per rollout; python: run code in the sandbox; calculator: exact arithmetic; custom: environment.factory"}
    )
    factory: Optional[str] = field(default=None, metadata={"help": "name=custom: a function package.module:make_env, called as make_env(config, tool_format) once per rollout (environment/base.py)"})
    max_turns: int = field(default=4, metadata={"help": "model turns per rollout, at most", **POSITIVE})
    max_total_tokens: int = field(default=1024, metadata={"help": "model and environment tokens after the prompt per rollout, at most", **POSITIVE})
    tool_format: Literal["auto", "tagged"] = field(
        default="auto", metadata={"help": "auto: the chat template's <tool_call> convention when data.use_chat_template and the template has one, else tagged (<python>...</python> answered by <output>...</output>)"}
    )
    reward: Literal["verifier", "environment", "sum"] = field(
        default="verifier", metadata={"help": "the rollout's reward: the verifier's score of the final answer, the environment's reward(transcript), or their sum"}
    )
    max_output_chars: int = field(default=1000, metadata={"help": "a tool's output is cut to this many characters before the model reads it", **POSITIVE})


@dataclass
class Config:
    recipe: Optional[str] = field(default=None, metadata={"help": "the recipe the run was composed from"})
    description: str = field(default="", metadata={"help": "a recipe's one-line description"})
    resume: bool = field(default=False, metadata={"help": "continue the run in train.output_dir from its last checkpoint"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the policy model"})
    sampler: SamplerConfig = field(default_factory=SamplerConfig, metadata={"help": "generation"})
    verifier: VerifierConfig = field(default_factory=VerifierConfig, metadata={"help": "rewards"})
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig, metadata={"help": "the optimizer and its schedule"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "datasets and prompts"})
    sft: SftConfig = field(default_factory=SftConfig, metadata={"help": "the supervised cold start"})
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig, metadata={"help": "the GRPO objective"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "the training loop"})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "evaluation"})
    preflight: PreflightConfig = field(default_factory=PreflightConfig, metadata={"help": "grpo preflight: is the task learnable from this model"})
    environment: EnvironmentConfig = field(default_factory=EnvironmentConfig, metadata={"help": "multi-turn rollouts with tools"})

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
        for k in self.eval.pass_at:
            if k < 1 or k > self.eval_num_samples:
                raise ConfigError(
                    f"eval.pass_at={self.eval.pass_at}: each k must be in [1, n] with n = eval.num_samples = {self.eval_num_samples}"
                )
        steps = self.data.difficulty_steps
        if steps and (len(steps) != len(self.data.difficulty) or min(steps) != 0 or self.data.name != "harbor"):
            raise ConfigError(
                f"data.difficulty_steps={steps}: needs data.name=harbor and one start step per level of "
                f"data.difficulty={self.data.difficulty}, the first 0"
            )
        algorithm = self.algorithm
        if algorithm.overlong_buffer >= self.sampler.max_new_tokens:
            raise ConfigError(
                f"algorithm.overlong_buffer={algorithm.overlong_buffer}: must be below sampler.max_new_tokens="
                f"{self.sampler.max_new_tokens} (the penalty covers the last overlong_buffer tokens of the budget)"
            )
        if algorithm.max_resample_rounds and not algorithm.filter_zero_variance:
            raise ConfigError(
                f"algorithm.max_resample_rounds={algorithm.max_resample_rounds}: resampling replaces the groups "
                "algorithm.filter_zero_variance drops; set filter_zero_variance=true, or max_resample_rounds=0"
            )
        if algorithm.scale_rewards != "group" and algorithm.advantage != "grpo":
            raise ConfigError(
                f"algorithm.scale_rewards={algorithm.scale_rewards}: applies to algorithm.advantage=grpo only, "
                f"not {algorithm.advantage}; drop it or use advantage=grpo"
            )
        if algorithm.pass_k > algorithm.group_size:
            raise ConfigError(
                f"algorithm.pass_k={algorithm.pass_k}: pass@k is estimated from the group's k-subsets, so k must be "
                f"at most algorithm.group_size={algorithm.group_size}; lower pass_k or raise group_size"
            )
        if (algorithm.pass_k != 1 or algorithm.pass_k_anneal_steps) and algorithm.advantage not in PASS_K_ESTIMATORS:
            raise ConfigError(
                f"algorithm.pass_k={algorithm.pass_k}, pass_k_anneal_steps={algorithm.pass_k_anneal_steps}: apply to "
                f"algorithm.advantage={' or '.join(PASS_K_ESTIMATORS)} only, not {algorithm.advantage}; drop them or set advantage=passk"
            )
        if algorithm.clip_cov_low >= algorithm.clip_cov_high:
            raise ConfigError(
                f"algorithm.clip_cov_low={algorithm.clip_cov_low}, clip_cov_high={algorithm.clip_cov_high}: Clip-Cov draws "
                "tokens whose covariance lies between them; low must be below high"
            )
        if self.train.async_steps and algorithm.tis_cap is None:
            raise ConfigError(
                f"train.async_steps={self.train.async_steps} needs algorithm.tis_cap: the batch was sampled before the "
                "last update, and the truncated importance weight corrects for it; set e.g. algorithm.tis_cap=2"
            )
        if self.train.async_steps and (self.data.skip_solved or self.data.skip_unsolved):
            raise ConfigError(
                f"train.async_steps={self.train.async_steps} with data.skip_solved={self.data.skip_solved:g}, "
                f"data.skip_unsolved={self.data.skip_unsolved:g}: a step's prompts are chosen before the step "
                "before it is scored; set both to 0, or train.async_steps=0"
            )
        if len(self.optimizer.betas) != 2 or not all(0 <= b < 1 for b in self.optimizer.betas):
            raise ConfigError(f"optimizer.betas={self.optimizer.betas}: needs two numbers in [0, 1)")
        self._validate_environment()
        if self.sampler.temperature == 0 and self.algorithm.group_size > 1:
            warnings.warn(
                f"sampler.temperature=0 (greedy) with algorithm.group_size={self.algorithm.group_size}: every completion "
                "in a group is identical, so every advantage is 0 and GRPO learns nothing. Use temperature > 0.",
                stacklevel=2,
            )

    def _validate_environment(self) -> None:
        environment = self.environment
        if (environment.name == "custom") != (environment.factory is not None):
            raise ConfigError(
                f"environment.name={environment.name}, environment.factory={environment.factory}: a factory "
                "(package.module:make_env) goes with environment.name=custom, and only with it"
            )
        if environment.reward != "verifier" and environment.name == "none":
            raise ConfigError(f"environment.reward={environment.reward}: needs an environment; set environment.name")
        if environment.reward != "verifier" and self.verifier.rewards.normalize == "per_component":
            raise ConfigError(
                f"environment.reward={environment.reward}: verifier.rewards.normalize=per_component normalizes the "
                "verifier's components only; use environment.reward=verifier or normalize=none"
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
        if len(inner) == 1:
            return _convert(inner[0], value, key)
        for option in inner:  # `str | list[str]`: the first type the value converts to
            try:
                return _convert(option, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}={value!r}: must be {_type_text(tp)}")
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
        registry = fields[name].metadata.get("registry")
        if registry and converted not in registry().names():
            names = registry().names()
            close = difflib.get_close_matches(str(converted), names, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"{key}={value!r}: unknown; {hint}known: {', '.join(names)}")
        values[name] = converted
    return cls(**values)


@dataclass
class KeyInfo:
    """One configuration key, as `grpo config --explain` and the README's reference tables show it."""

    key: str
    type: str
    default: Any
    allowed: str
    help: str


def key_reference(prefix: str = "") -> list[KeyInfo]:
    """Every leaf key whose dotted name is `prefix` or starts with `prefix.` ("" for all), in schema order.

    Raises ConfigError naming the closest key when nothing matches.
    """
    rows = [row for row in _walk(Config, "") if not prefix or row.key == prefix or row.key.startswith(prefix + ".")]
    if not rows:
        raise ConfigError(f"unknown key {prefix}{suggest_key(prefix)}")
    return rows


def _walk(cls: type, prefix: str):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _walk(tp, f"{prefix}{f.name}.")
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        choices = typing.get_args(tp) if typing.get_origin(tp) is Literal else ()
        allowed = ", ".join(map(str, choices)) if choices else f.metadata.get("check", (None, ""))[1]
        if "registry" in f.metadata:
            allowed = ", ".join(f.metadata["registry"]().names())
        yield KeyInfo(prefix + f.name, _type_text(tp), default, allowed, f.metadata["help"])


def _type_text(tp: Any) -> str:
    """`Optional[int]` -> "int or null", `list[str]` -> "list of str", a Literal -> "choice"."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "choice"
    if origin is list:
        return f"list of {_type_text(typing.get_args(tp)[0])}"
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        text = " or ".join(_type_text(t) for t in options if t is not type(None))
        return f"{text} or null" if type(None) in options else text
    return _type_name(tp)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: a config dict by the dotted keys that overrides use."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[prefix + key] = value
    return flat


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
