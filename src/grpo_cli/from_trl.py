"""From TRL: each GRPOConfig field mapped to grpo's keys, and `grpo config --from-trl FILE`.

TABLE below is the one mapping: `grpo config --from-trl grpo_config.json` (a GRPOConfig saved as JSON or YAML:
`GRPOConfig.to_json_string()`, or the YAML a TRL script reads with --config) turns every field of the file into
the equivalent overrides, printed on one line (shell-quoted) to paste after `grpo train`; docs/from-trl.md is
written from TABLE by scripts/config_reference.py, and a test checks that it is current and that every key it
names exists.

Each field is one of:
  - mapped: its value becomes grpo overrides (whatever the value: the run then does what TRL's would);
  - bookkeeping: logging, saving, the Hub, data loading speed: nothing to carry over, ignored;
  - without an equivalent: accepted only at the value that asks TRL for nothing grpo lacks (its `neutral`
    value); any other value is refused, all such fields named in one line.
A field the table does not list is a TrainingArguments field: accepted at transformers' default, refused
otherwise. Read from TRL 1.10 (GRPOConfig) and transformers 5.19 (TrainingArguments).
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from grpo_cli.errors import ConfigError

Overrides = dict[str, Any]


class Unmappable(Exception):
    """The field's value asks for what grpo has not; the message says what."""


@dataclass(frozen=True)
class TrlField:
    name: str
    default: Any  # TRL's default, as the doc shows it
    keys: tuple[str, ...]  # the grpo keys it sets (none: bookkeeping, or no equivalent)
    note: str
    # value, the whole file -> overrides; raises Unmappable
    convert: Callable[[Any, dict], Overrides] = field(default=lambda value, trl: {}, repr=False)
    bookkeeping: bool = False


def same(name: str, default: Any, key: str, note: str = "") -> TrlField:
    """A field whose value is the grpo key's value."""
    return TrlField(name, default, (key,), note, lambda value, trl: {key: value})


def choice(name: str, default: Any, key: str, values: dict, note: str = "") -> TrlField:
    """A field whose TRL values name grpo values (`values`); the others have no equivalent."""

    def convert(value, trl):
        if value not in values:
            raise Unmappable(f"{name}={value!r} has no equivalent (grpo has {', '.join(map(repr, values))})")
        return {key: values[value]}

    return TrlField(name, default, (key,), note or ", ".join(f"{k} -> {v}" for k, v in values.items()), convert)


def without(name: str, default: Any, neutral: Any, note: str) -> TrlField:
    """A field grpo has no equivalent for: accepted at `neutral` only."""

    def convert(value, trl):
        if value != neutral:
            raise Unmappable(f"{name}={value!r} ({note})")
        return {}

    return TrlField(name, default, (), f"no equivalent: {note}; accepted at {json.dumps(neutral)}", convert)


def bookkeeping(name: str, default: Any, note: str) -> TrlField:
    return TrlField(name, default, (), note, bookkeeping=True)


def _epsilon(value, trl):
    if trl.get("loss_type") == "cispo":
        return {}  # CISPO has no lower clip; its cap is epsilon_high
    return {"algorithm.clip_eps_low": value} | ({} if trl.get("epsilon_high") is not None else {"algorithm.clip_eps_high": value})


def _epsilon_high(value, trl):
    if value is None:
        return {}
    if trl.get("loss_type") == "cispo":
        return {"algorithm.clip_eps_high": value - 1}  # TRL caps the weight at epsilon_high, grpo at 1 + clip_eps_high
    return {"algorithm.clip_eps_high": value}


LOSS_TYPES = {"grpo": "seq_mean", "dapo": "token_mean", "dr_grpo": "seq_sum_norm", "bnpo": "token_mean", "cispo": "token_mean"}


def _loss_type(value, trl):
    if value not in LOSS_TYPES:
        raise Unmappable(f"loss_type={value!r} has no equivalent (grpo has {', '.join(map(repr, LOSS_TYPES))})")
    return {"algorithm.loss_agg": LOSS_TYPES[value]} | ({"algorithm.policy_loss": "cispo"} if value == "cispo" else {})


def _prompts_per_step(value, trl):
    """TRL counts completions per device and micro-step; grpo counts the prompts of an optimizer step."""
    completions = trl.get("per_device_train_batch_size", 8) * trl.get("gradient_accumulation_steps", 1)
    generations = trl.get("num_generations", 8)
    if completions % generations:
        raise Unmappable(
            f"per_device_train_batch_size x gradient_accumulation_steps = {completions} is not a multiple of "
            f"num_generations={generations}"
        )
    return {"train.prompts_per_step": completions // generations}


def _use_vllm(value, trl):
    return {"sampler.name": "vllm" if value else "hf"}


def _vllm_only(name: str, neutral: Any, note: str) -> Callable:
    """No equivalent, but only when vLLM generates: without use_vllm the field does nothing."""

    def convert(value, trl):
        if trl.get("use_vllm") and value != neutral:
            raise Unmappable(f"{name}={value!r} ({note})")
        return {}

    return convert


def _importance_correction(value, trl):
    """TRL corrects vLLM's sampling mismatch by default (sequence_mask); grpo's truncated weight is token_truncate."""
    if not trl.get("use_vllm") or not value:
        return {}
    mode = trl.get("vllm_importance_sampling_mode", "sequence_mask")
    if mode != "token_truncate":
        raise Unmappable(
            f"vllm_importance_sampling_mode={mode!r} with vllm_importance_sampling_correction=true (grpo's "
            "algorithm.tis_cap is token_truncate; set that mode, or the correction to false)"
        )
    return {"algorithm.tis_cap": trl.get("vllm_importance_sampling_clip_max", 3.0)}


def _dtype(value, trl):
    if trl.get("fp16"):
        return {"model.dtype": "float16"}
    if value is None:
        return {}
    return {"model.dtype": "bfloat16" if value else "float32"}


def _max_steps(value, trl):
    return {"train.max_steps": None if value is None or value <= 0 else value}


def _warmup(value, trl):
    if value < 1 and value != 0:  # transformers: a float below 1 is a fraction of the run
        max_steps = trl.get("max_steps", -1)
        if not max_steps or max_steps <= 0:
            raise Unmappable(f"warmup_steps={value} is a fraction of the run, and max_steps is not set to count it from")
        return {"optimizer.warmup_steps": math.ceil(value * max_steps)}
    return {"optimizer.warmup_steps": int(value)}


SCHEDULES = {"constant": "constant", "constant_with_warmup": "constant", "linear": "linear", "cosine": "cosine"}


def _schedule(value, trl):
    if value not in SCHEDULES:
        raise Unmappable(f"lr_scheduler_type={value!r} has no equivalent (grpo's optimizer.schedule: constant, linear, cosine)")
    return {"optimizer.schedule": SCHEDULES[value]}


def _optim(value, trl):
    if value not in ("adamw_torch", "adamw_torch_fused"):
        raise Unmappable(f"optim={value!r} has no equivalent (grpo's optimizer is torch's AdamW)")
    return {}


def _betas(value, trl):
    return {"optimizer.betas": [trl.get("adam_beta1", 0.9), trl.get("adam_beta2", 0.999)]}


def _report_to(value, trl):
    names = [value] if isinstance(value, str) else list(value or [])
    names = [name for name in names if name != "none"]
    unknown = [name for name in names if name not in ("tensorboard", "wandb", "mlflow")]
    if unknown:
        raise Unmappable(f"report_to={value!r}: grpo's train.report_to has tensorboard, wandb, mlflow")
    return {"train.report_to": names}


def _every(strategy: str, steps: str, key: str, default_steps: int) -> Callable:
    def convert(value, trl):
        if value == "no":
            return {key: 0} if key == "train.eval_every" else {}
        if value != "steps":
            raise Unmappable(f"{strategy}={value!r}: grpo's {key} counts steps")
        return {key: trl.get(steps) or default_steps}

    return convert


def _entropy_quantile(value, trl):
    if value <= 0:
        raise Unmappable(f"top_entropy_quantile={value}: grpo's algorithm.entropy_mask_top must be > 0")
    return {"algorithm.entropy_mask_top": value}


TABLE: list[TrlField] = [
    # What GRPO samples and how it is scored
    same("num_generations", 8, "algorithm.group_size"),
    same("num_generations_eval", None, "eval.num_samples", "null: grpo's max(eval.pass_at)"),
    same("max_completion_length", 512, "sampler.max_new_tokens"),
    same("temperature", 1.0, "sampler.temperature"),
    same("top_p", 1.0, "sampler.top_p"),
    same("top_k", 0, "sampler.top_k"),
    without("min_p", None, None, "grpo samples with temperature, top_p and top_k"),
    without("repetition_penalty", 1.0, 1.0, "the sampler would not sample the policy"),
    without("generation_kwargs", None, None, "sampler.* holds what grpo samples with"),
    without("chat_template_kwargs", None, None, "the chat template is rendered with its defaults"),
    without("max_tool_calling_iterations", None, None, "tools: environment.max_turns in multi-turn rollouts"),
    TrlField("reward_weights", None, ("verifier.rewards.custom_weight",),
             "one weight per function of verifier.rewards.custom (the reward functions themselves: verifier.rewards.custom)",
             lambda value, trl: {} if value is None else {"verifier.rewards.custom_weight": value}),
    choice("multi_objective_aggregation", "sum_then_normalize", "verifier.rewards.normalize",
           {"sum_then_normalize": "none", "normalize_then_sum": "per_component"}),
    choice("scale_rewards", "group", "algorithm.scale_rewards", {"group": "group", True: "group", "batch": "batch", "none": "none", False: "none"},
           "group (true) -> group, batch -> batch, none (false) -> none"),
    # The objective
    same("beta", 0.0, "algorithm.kl_coef", "KL to the reference, k3 estimator as in TRL"),
    TrlField("epsilon", 0.2, ("algorithm.clip_eps_low", "algorithm.clip_eps_high"),
             "both clip bounds, unless epsilon_high sets the upper one", _epsilon),
    TrlField("epsilon_high", None, ("algorithm.clip_eps_high",), "with loss_type=cispo: epsilon_high - 1 (grpo caps the weight at 1 + clip_eps_high)",
             _epsilon_high),
    without("delta", None, None, "INTELLECT-2's two-sided clipping; algorithm.policy_loss=dual_clip is dual-clip PPO"),
    TrlField("loss_type", "dapo", ("algorithm.loss_agg", "algorithm.policy_loss"),
             "grpo -> seq_mean, dapo -> token_mean, dr_grpo -> seq_sum_norm, bnpo -> token_mean (over the whole step), "
             "cispo -> policy_loss=cispo with token_mean; sapo, luspo, vespo: no equivalent", _loss_type),
    choice("importance_sampling_level", "token", "algorithm.importance_level", {"token": "token", "sequence": "sequence"}),
    same("mask_truncated_completions", False, "algorithm.mask_truncated"),
    TrlField("top_entropy_quantile", 1.0, ("algorithm.entropy_mask_top",), "", _entropy_quantile),
    same("entropy_coef", 0.0, "algorithm.entropy_coef"),
    without("use_adaptive_entropy", False, False, "the entropy coefficient is fixed"),
    bookkeeping("entropy_coef_min", 0.0, "adaptive entropy only"),
    bookkeeping("entropy_coef_max", 1.0, "adaptive entropy only"),
    bookkeeping("entropy_coef_delta", 0.005, "adaptive entropy only"),
    bookkeeping("entropy_target", 0.2, "adaptive entropy only"),
    same("num_iterations", 1, "algorithm.num_iterations"),
    without("sync_ref_model", False, False, "the reference stays the starting model"),
    bookkeeping("ref_model_mixup_alpha", 0.6, "sync_ref_model only"),
    bookkeeping("ref_model_sync_steps", 512, "sync_ref_model only"),
    without("off_policy_mask_threshold", None, None, "no off-policy sequence masking"),
    without("use_bias_correction_kl", False, False, "the KL estimate is not importance-weighted"),
    bookkeeping("sapo_temperature_neg", 1.05, "loss_type=sapo only (no equivalent)"),
    bookkeeping("sapo_temperature_pos", 1.0, "loss_type=sapo only (no equivalent)"),
    bookkeeping("vespo_k_pos", 2.0, "loss_type=vespo only (no equivalent)"),
    bookkeeping("vespo_lambda_pos", 3.0, "loss_type=vespo only (no equivalent)"),
    bookkeeping("vespo_k_neg", 3.0, "loss_type=vespo only (no equivalent)"),
    bookkeeping("vespo_lambda_neg", 2.0, "loss_type=vespo only (no equivalent)"),
    # Batch sizes
    TrlField("per_device_train_batch_size", 8, ("train.prompts_per_step",),
             "train.prompts_per_step = per_device_train_batch_size x gradient_accumulation_steps / num_generations "
             "(x the processes of an accelerate launch: grpo counts the whole step)", _prompts_per_step),
    TrlField("gradient_accumulation_steps", 1, ("train.prompts_per_step",),
             "see per_device_train_batch_size; grpo accumulates by train.micro_batch_tokens", _prompts_per_step),
    without("generation_batch_size", None, None, "a step samples its own prompts"),
    without("steps_per_generation", None, None, "a step samples its own prompts (several updates per batch: num_iterations)"),
    without("shuffle_dataset", True, True, "the train prompts are reshuffled each epoch"),
    # vLLM
    TrlField("use_vllm", False, ("sampler.name",), "true -> vllm, false -> hf", _use_vllm),
    TrlField("vllm_mode", "colocate", (), "colocate only: grpo's engine shares the training process",
             _vllm_only("vllm_mode", "colocate", "grpo's vLLM engine is colocated; there is no server mode")),
    same("vllm_gpu_memory_utilization", 0.3, "sampler.gpu_memory_utilization"),
    TrlField("vllm_max_model_length", None, ("sampler.max_model_len",), "null: grpo's default",
             lambda value, trl: {} if value is None else {"sampler.max_model_len": value}),
    same("vllm_tensor_parallel_size", 1, "sampler.tensor_parallel_size", "1 only"),
    same("vllm_enable_sleep_mode", False, "sampler.enable_sleep_mode"),
    TrlField("vllm_model_impl", "vllm", (), "vllm only",
             _vllm_only("vllm_model_impl", "vllm", "grpo's engine runs vLLM's own model code")),
    TrlField("vllm_structured_outputs_regex", None, (), "none",
             _vllm_only("vllm_structured_outputs_regex", None, "no constrained decoding")),
    TrlField("vllm_importance_sampling_correction", True, ("algorithm.tis_cap",),
             "with use_vllm and vllm_importance_sampling_mode=token_truncate: algorithm.tis_cap = "
             "vllm_importance_sampling_clip_max; the default mode sequence_mask has no equivalent", _importance_correction),
    bookkeeping("vllm_importance_sampling_mode", "sequence_mask", "read with vllm_importance_sampling_correction"),
    bookkeeping("vllm_importance_sampling_clip_max", 3.0, "read with vllm_importance_sampling_correction"),
    TrlField("vllm_importance_sampling_clip_min", None, (), "none",
             _vllm_only("vllm_importance_sampling_clip_min", None, "algorithm.tis_cap has no lower bound")),
    bookkeeping("vllm_importance_sampling_cap", None, "deprecated name of vllm_importance_sampling_clip_max"),
    bookkeeping("vllm_server_base_url", None, "server mode only"),
    bookkeeping("vllm_server_host", "0.0.0.0", "server mode only"),
    bookkeeping("vllm_server_port", 8000, "server mode only"),
    bookkeeping("vllm_server_timeout", 240.0, "server mode only"),
    bookkeeping("vllm_group_port", 51216, "server mode only"),
    bookkeeping("use_transformers_continuous_batching", False, "generation speed only"),
    bookkeeping("transformers_continuous_batching_config", None, "generation speed only"),
    bookkeeping("use_transformers_paged", False, "generation speed only"),
    bookkeeping("cache_implementation", None, "generation speed only"),
    bookkeeping("ds3_gather_for_generation", True, "DeepSpeed only"),
    # The model and the optimizer (TrainingArguments, GRPOConfig's defaults)
    same("learning_rate", 1e-6, "optimizer.lr"),
    TrlField("lr_scheduler_type", "linear", ("optimizer.schedule",),
             "constant and constant_with_warmup -> constant, linear -> linear, cosine -> cosine; others: no equivalent", _schedule),
    TrlField("warmup_steps", 0, ("optimizer.warmup_steps",), "a fraction below 1 counts from max_steps", _warmup),
    same("weight_decay", 0.0, "optimizer.weight_decay"),
    TrlField("adam_beta1", 0.9, ("optimizer.betas",), "with adam_beta2", _betas),
    TrlField("adam_beta2", 0.999, ("optimizer.betas",), "with adam_beta1", _betas),
    same("adam_epsilon", 1e-8, "optimizer.eps"),
    same("max_grad_norm", 1.0, "optimizer.max_grad_norm"),
    TrlField("optim", "adamw_torch_fused", (), "adamw_torch(_fused) only: grpo's optimizer is torch's AdamW", _optim),
    TrlField("bf16", True, ("model.dtype",), "true -> bfloat16, false -> float32 (fp16 true -> float16)", _dtype),
    bookkeeping("fp16", False, "read with bf16"),
    same("gradient_checkpointing", True, "model.gradient_checkpointing"),
    without("disable_dropout", False, False, "the policy trains in train mode, as TRL's default"),
    without("use_liger_kernel", False, False, "no Liger kernels"),
    without("torch_compile", False, False, "no torch.compile"),
    bookkeeping("model_init_kwargs", None, "model.name_or_path and model.dtype load the model"),
    without("cast_lm_head_to_fp32", False, False, "the LM head computes in the model's dtype"),
    without("router_aux_loss_coef", 0.001, 0.001, "no mixture-of-experts router loss; accepted at TRL's default, which only "
            "acts with output_router_logits"),
    bookkeeping("pad_to_multiple_of", None, "padding speed only"),
    without("max_prompt_length", None, None, "older TRL cut prompts to this length; grpo never cuts a prompt"),
    bookkeeping("trust_remote_code", False, "models load through transformers' own classes"),
    # The run
    same("num_train_epochs", 3.0, "train.epochs"),
    TrlField("max_steps", -1, ("train.max_steps",), "-1 -> null", _max_steps),
    same("seed", 42, "train.seed"),
    TrlField("output_dir", None, ("train.output_dir",), "null: grpo's runs/<recipe>",
             lambda value, trl: {} if value is None else {"train.output_dir": value}),
    TrlField("eval_strategy", "no", ("train.eval_every",), "no -> 0 (start and end only), steps -> eval_steps",
             _every("eval_strategy", "eval_steps", "train.eval_every", 500)),
    bookkeeping("eval_steps", None, "read with eval_strategy"),
    TrlField("save_strategy", "steps", ("train.save_every",), "steps -> save_steps; no: grpo always checkpoints",
             _every("save_strategy", "save_steps", "train.save_every", 500)),
    bookkeeping("save_steps", 500, "read with save_strategy"),
    TrlField("report_to", "none", ("train.report_to",), "tensorboard, wandb, mlflow", _report_to),
    bookkeeping("remove_unused_columns", False, "every column but the prompt's reaches the reward functions"),
    bookkeeping("logging_steps", 10, "grpo logs every step"),
    bookkeeping("log_completions", False, "samples.jsonl holds train.log_groups_per_step groups a step"),
    bookkeeping("num_completions_to_print", None, "logging only"),
    bookkeeping("log_unique_prompts", False, "logging only"),
    bookkeeping("log_multimodal", True, "logging only"),
    bookkeeping("log_completions_hub_repo", None, "logging only"),
    bookkeeping("per_device_eval_batch_size", 8, "eval batches are sized as training's"),
]
BY_NAME = {f.name: f for f in TABLE}
# TrainingArguments fields with no effect on what is trained: whatever their value.
BOOKKEEPING = {
    "run_name", "project", "logging_dir", "logging_strategy", "logging_first_step", "logging_nan_inf_filter", "log_level",
    "log_level_replica", "log_on_each_node", "disable_tqdm", "push_to_hub", "hub_token", "hub_private_repo",
    "hub_model_id", "hub_strategy", "hub_always_push", "hub_revision", "save_total_limit", "save_only_model",
    "save_on_each_node", "overwrite_output_dir", "do_train", "do_eval", "do_predict", "dataloader_num_workers",
    "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor", "dataloader_drop_last",
    "resume_from_checkpoint", "local_rank", "ddp_timeout", "ddp_backend", "skip_memory_metrics", "include_num_input_tokens_seen",
    "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id", "eval_on_start", "load_best_model_at_end",
    "metric_for_best_model", "greater_is_better", "tf32", "accelerator_config",
}


def convert(trl: dict) -> Overrides:
    """The grpo overrides equivalent to a GRPOConfig's fields; ConfigError naming every field that has none."""
    overrides: Overrides = {}
    refused = []
    for name, value in trl.items():
        entry = BY_NAME.get(name)
        if entry is None:
            if name in BOOKKEEPING:
                continue
            defaults = _training_arguments_defaults()
            if name not in defaults:
                refused.append(f"{name}={value!r} (not a field of TRL's GRPOConfig)")
            elif value != defaults[name] and (value or defaults[name]):  # [] for "" is no change
                refused.append(f"{name}={value!r} (no equivalent; accepted at transformers' default {defaults[name]!r})")
            continue
        try:
            overrides |= entry.convert(value, trl)
        except Unmappable as exc:
            refused.append(str(exc))
    if refused:
        raise ConfigError(f"--from-trl: {len(refused)} field(s) have no grpo equivalent: " + "; ".join(refused))
    return overrides


def _training_arguments_defaults() -> dict:
    """transformers.TrainingArguments' field defaults (imported once, only for fields TABLE does not list)."""
    global _DEFAULTS
    if _DEFAULTS is None:
        import dataclasses

        from transformers import TrainingArguments

        _DEFAULTS = {
            f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(TrainingArguments)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        }
    return _DEFAULTS


_DEFAULTS: dict | None = None


def read(path: str) -> dict:
    """A GRPOConfig saved as JSON (GRPOConfig.to_json_string) or YAML (a TRL script's --config)."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--from-trl {path}: no such file")
    try:
        trl = json.loads(file.read_text()) if file.suffix == ".json" else yaml.safe_load(file.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"--from-trl {path}: not valid {'JSON' if file.suffix == '.json' else 'YAML'} ({str(exc).splitlines()[0]})") from None
    if not isinstance(trl, dict):
        raise ConfigError(f"--from-trl {path}: expected a mapping of GRPOConfig fields")
    return trl




def _hydra(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra(item) for item in value) + "]"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    return text if re.fullmatch(r"[\w./:-]+", text) else "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def from_trl_command(path: str) -> tuple[str, list[str]]:
    """`grpo config --from-trl FILE`: (the overrides, shell-quoted on one line, once they compose into a valid
    configuration: ConfigError otherwise, as for any override; notes on what to add)."""
    from grpo_cli.compose import compose

    converted = convert(read(path))
    overrides = [f"{key}={_hydra(value)}" for key, value in converted.items()]
    notes = []
    weights = converted.get("verifier.rewards.custom_weight")
    if weights is not None:
        # GRPOConfig holds the weights, the trainer the functions: they come as verifier.rewards.custom.
        placeholders = [f"module:function_{i}" for i in range(1, len(weights) + 1)]
        notes.append(f"reward_weights: add verifier.rewards.custom=[{','.join(placeholders)}] with your {len(weights)} "
                     "reward functions, in the order of TRL's reward_funcs")
        compose([*overrides, f"verifier.rewards.custom={_hydra(placeholders)}"])
    else:
        compose(overrides)
    if "train.prompts_per_step" in converted:
        notes.append("train.prompts_per_step counts one process's batch: multiply it by the processes of your accelerate launch")
    return " ".join(map(shlex.quote, overrides)), notes


def doc_table() -> str:
    """docs/from-trl.md's table, from TABLE: each field, TRL's default, the grpo keys and their defaults."""
    from grpo_cli.config import key_reference

    defaults = {row.key: row.default for row in key_reference()}
    lines = ["| TRL GRPOConfig field | TRL default | grpo key | grpo default | how |", "|---|---|---|---|---|"]
    for entry in TABLE:
        keys = ", ".join(f"`{key}`" for key in entry.keys) or ("ignored" if entry.bookkeeping else "none")
        grpo_defaults = ", ".join(f"`{json.dumps(defaults[key])}`" for key in entry.keys)
        cells = [f"`{entry.name}`", f"`{json.dumps(entry.default)}`", keys, grpo_defaults, entry.note or "the same value"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)
