"""The shipped recipes themselves train on CPU, with a tiny model standing in for the real one.

Only sizes change (steps, eval prompts, lengths); every other value, vLLM sampling included, is the recipe's.
"""

import json
import subprocess

import pytest

from conftest import GRPO, REPO
from grpo_cli.compose import compose

SMALL = ["train.max_steps=2", "eval.num_prompts=4", "sampler.max_new_tokens=32", "sampler.kv_cache_gb=1"]


def grpo_train(*args):
    result = subprocess.run([GRPO, "train", *args], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.vllm
def test_gsm8k_recipe_trains_on_the_local_copy(tiny_model, tmp_path, gsm8k):
    grpo_train("recipe=gsm8k", *gsm8k, f"model.name_or_path={tiny_model}", f"train.output_dir={tmp_path}", *SMALL,
               "train.prompts_per_step=4")
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    config = (tmp_path / "config.yaml").read_text()
    assert "train_path: " + gsm8k[0].split("=", 1)[1] in config and "hf_path: openai/gsm8k" in config
    assert "name: vllm" in config


@pytest.mark.vllm
def test_harbor_math_recipe_trains_with_lora_and_merges(tiny_model, tmp_path):
    grpo_train("recipe=harbor_math", f"model.name_or_path={tiny_model}", f"train.output_dir={tmp_path}", *SMALL,
               "train.prompts_per_step=2", "data.num_train=200", "data.num_eval=20")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 2
    best = tmp_path / "checkpoints" / (tmp_path / "checkpoints" / "best").read_text().strip()
    assert (best / "adapter_config.json").exists()  # LoRA: checkpoints hold the adapter only
    assert not (best / "model.safetensors").exists()
    assert (tmp_path / "merged" / "config.json").exists()
    assert summary["merged_model"] == str(tmp_path / "merged")


def test_the_tool_recipes_compose():
    python = compose(["recipe=gsm8k_python"])
    assert (python.environment.name, python.sampler.name, python.data.name) == ("python", "vllm", "gsm8k")
    assert python.data.use_chat_template and python.environment.tool_format == "auto"  # Qwen's <tool_call> form
    assert (python.data.hf_path, python.data.hf_name, python.data.train_path) == ("openai/gsm8k", "main", "")
    tools = compose(["recipe=harbor_tools"])
    assert (tools.environment.name, tools.sampler.name, tools.data.difficulty) == ("calculator", "hf", [1])
    assert 0 < tools.data.tool_solutions < 1 and tools.model.tiny.hidden_size // tools.model.tiny.num_heads >= 64


@pytest.mark.vllm
def test_gsm8k_python_recipe_runs_python_tool_rollouts(tiny_model, tmp_path, gsm8k):
    """The tiny model has no <tool_call> chat template, so its calls take the tagged form; it writes noise,
    so the point is that the recipe's whole path (chat prompts, sandbox environment, vLLM) runs."""
    grpo_train("recipe=gsm8k_python", *gsm8k, f"model.name_or_path={tiny_model}", f"train.output_dir={tmp_path}", *SMALL,
               "train.prompts_per_step=4", "train.micro_batch_tokens=1024")
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["env/turns_mean"] >= 1 for m in metrics)


def test_the_smollm2_recipe_keeps_harbor_maths_settings_on_the_real_model(real_model):
    from grpo_cli.data.loaders import load_examples
    from grpo_cli.data.prompts import format_prompt
    from grpo_cli.models import load_tokenizer

    config = compose(["recipe=smollm2_harbor"])
    reference = compose(["recipe=harbor_math"])
    assert REPO / config.model.name_or_path == real_model
    for settings in (config, reference):
        assert settings.model.lora.enabled and settings.model.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
        assert (settings.algorithm.kl_coef, settings.algorithm.kl_estimator, settings.sampler.temperature) == (0.04, "k3", 0.9)
        assert (settings.verifier.extract, settings.verifier.marker) == ("final_line", "FINAL:")
    assert (config.sampler.name, config.data.difficulty) == ("hf", [1])
    # The prompt asks for the marker line the verifier reads, as a user turn after SmolLM2's default system prompt.
    example = load_examples(config, "eval")[0]
    prompt = format_prompt(example, load_tokenizer(str(real_model)), config.data)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert prompt.endswith(f"{example.question}\nWork it out, then write the number alone on the last line as "
                           "FINAL: <number>\n<|im_end|>\n<|im_start|>assistant\n")
