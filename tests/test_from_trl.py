"""From TRL: `grpo config --from-trl FILE` turns a GRPOConfig into overrides, refusing what grpo cannot do, and
docs/from-trl.md names only keys that exist."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from conftest import REPO
from grpo_cli.cli import main
from grpo_cli.compose import compose
from grpo_cli.config import key_reference
from grpo_cli.from_trl import TABLE, convert
from grpo_cli.training.learner import lr_factor

TRL_YAML = """\
output_dir: runs/qwen-grpo
learning_rate: 3.0e-6
lr_scheduler_type: cosine
warmup_steps: 0.1
max_steps: 500
per_device_train_batch_size: 16
gradient_accumulation_steps: 4
num_generations: 16
max_completion_length: 1024
beta: 0.04
epsilon_high: 0.28
loss_type: dr_grpo
scale_rewards: false
use_vllm: true
vllm_mode: colocate
vllm_gpu_memory_utilization: 0.5
vllm_importance_sampling_correction: false
temperature: 0.9
reward_weights: [1.0, 0.2]
bf16: true
logging_steps: 5
push_to_hub: true
report_to: [wandb]
seed: 7
"""


def from_trl(path, capsys) -> tuple[int, str, str]:
    try:
        main(["config", "--from-trl", str(path)])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_a_trl_yaml_becomes_overrides_that_compose(tmp_path, capsys):
    (tmp_path / "grpo.yaml").write_text(TRL_YAML)
    code, out, err = from_trl(tmp_path / "grpo.yaml", capsys)
    assert code == 0, err
    assert "reward_weights: add verifier.rewards.custom=[module:function_1,module:function_2]" in err
    config = compose([*shlex.split(out), "verifier.rewards.custom=[m:f,m:g]"])
    algorithm, sampler, optimizer, train = config.algorithm, config.sampler, config.optimizer, config.train
    assert (algorithm.group_size, algorithm.kl_coef, algorithm.clip_eps_low, algorithm.clip_eps_high) == (16, 0.04, 0.2, 0.28)
    assert (algorithm.loss_agg, algorithm.scale_rewards) == ("seq_sum_norm", "none")
    assert (sampler.name, sampler.max_new_tokens, sampler.temperature, sampler.gpu_memory_utilization) == ("vllm", 1024, 0.9, 0.5)
    assert (optimizer.lr, optimizer.schedule, optimizer.warmup_steps) == (3e-6, "cosine", 50)  # 0.1 x 500 steps
    assert train.prompts_per_step == 4  # 16 completions x 4 accumulation steps / 16 generations
    assert (train.max_steps, train.seed, train.output_dir, train.report_to) == (500, 7, "runs/qwen-grpo", ["wandb"])
    assert (config.model.dtype, config.verifier.rewards.custom_weight) == ("bfloat16", [1.0, 0.2])


def test_fields_without_an_equivalent_are_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "grpo.json").write_text(json.dumps({
        "loss_type": "sapo", "use_vllm": True, "vllm_mode": "server", "sync_ref_model": True, "min_p": 0.1,
        "per_device_train_batch_size": 6, "num_generations": 4, "label_smoothing_factor": 0.1, "max_prompt_length": 512,
        "repetition_penalty": 1.0,  # at its neutral value: accepted
    }))
    code, out, err = from_trl(tmp_path / "grpo.json", capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("error: --from-trl: 7 field(s) have no grpo equivalent: ")
    for part in ["loss_type='sapo' has no equivalent", "vllm_mode='server' (grpo's vLLM engine is colocated",
                 "sync_ref_model=True", "min_p=0.1", "per_device_train_batch_size x gradient_accumulation_steps = 6 is not a multiple of num_generations=4",
                 "label_smoothing_factor=0.1 (no equivalent; accepted at transformers' default 0.0)",
                 "max_prompt_length=512 (older TRL cut prompts"]:
        assert part in err


def test_a_whole_grpoconfig_json_dump_converts(tmp_path):
    """GRPOConfig.to_json_string() writes every field, TrainingArguments' among them: each is mapped, ignored
    (bookkeeping) or at the value that needs no equivalent."""
    from transformers import TrainingArguments

    dump = TrainingArguments(output_dir="out").to_dict()
    dump |= {entry.name: entry.default for entry in TABLE if entry.name != "max_prompt_length"}
    dump |= {"learning_rate": 1e-6, "bf16": True, "gradient_checkpointing": True, "logging_steps": 10, "output_dir": "out"}
    overrides = convert(json.loads(json.dumps(dump, default=str)))
    assert {key: overrides[key] for key in ("train.prompts_per_step", "optimizer.schedule", "train.epochs", "train.max_steps",
                                           "algorithm.loss_agg", "sampler.max_new_tokens", "model.dtype")} == {
        "train.prompts_per_step": 1, "optimizer.schedule": "linear", "train.epochs": 3.0, "train.max_steps": None,
        "algorithm.loss_agg": "token_mean", "sampler.max_new_tokens": 512, "model.dtype": "bfloat16",
    }


def test_cispo_caps_the_weight_at_epsilon_high():
    assert convert({"loss_type": "cispo", "epsilon": 0.2, "epsilon_high": 5.0}) == {
        "algorithm.loss_agg": "token_mean", "algorithm.policy_loss": "cispo", "algorithm.clip_eps_high": 4.0
    }


def test_the_linear_schedule_falls_to_zero_after_warmup():
    assert [lr_factor(step, 2, 10, "linear") for step in (0, 1, 2, 6, 10)] == pytest.approx([1 / 3, 2 / 3, 1.0, 0.5, 0.0])


def test_every_grpo_key_the_doc_names_exists():
    text = (REPO / "docs" / "from-trl.md").read_text()
    sections = "model|sampler|verifier|optimizer|data|sft|algorithm|train|eval|preflight|environment"
    named = set(re.findall(rf"\b(?:{sections})\.[a-z_]+(?:\.[a-z_]+)*", text))
    keys = {row.key for row in key_reference()}
    assert len(named) > 40 and named <= keys, named - keys
    assert {key for entry in TABLE for key in entry.keys} <= keys
