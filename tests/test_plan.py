"""`grpo plan`: compute budget and memory estimate, checked against hand-computed numbers for a tiny config."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from grpo_cli.cli import main
from grpo_cli.compose import compose
from grpo_cli.config import Config, DataConfig
from grpo_cli.diagnostics.plan import (
    KNOWN_CONFIGS,
    GiB,
    ModelShape,
    compute_budget,
    count_train_prompts,
    estimate_memory,
    model_shape,
)
from grpo_cli.errors import ConfigError, GrpoError

MiB = 1024**2
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128, vocab_size=96)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "tiny"
    LlamaConfig(**TINY).save_pretrained(path)
    return path


def tiny_config(tiny_dir, *overrides):
    return compose([
        f"model.name_or_path={tiny_dir}", "model.dtype=float32", "model.lora.enabled=true", "model.lora.rank=8",
        "model.lora.target_modules=[q_proj,v_proj]", "sampler=vllm", "sampler.max_new_tokens=32",
        "sampler.gpu_memory_utilization=0.5", "data.num_train=100", "train.epochs=1.5", "train.prompts_per_step=8",
        "train.micro_batch_tokens=192", "algorithm.group_size=4", "algorithm.kl_coef=0.04", "algorithm.num_iterations=2",
        *overrides,
    ])


def test_parameter_count_of_a_local_config_matches_the_real_model(tiny_dir):
    shape, source = model_shape(str(tiny_dir))
    # embeddings + lm_head 2 x 96 x 64 = 12,288; per layer q 64x64 + k, v 64x32 + o 64x64 = 12,288,
    # MLP 3 x 64 x 128 = 24,576, norms 2 x 64: 36,992 x 2 layers; final norm 64.
    assert shape.num_params == 12_288 + 2 * 36_992 + 64 == 86_336
    assert shape.num_params == sum(p.numel() for p in LlamaForCausalLM(LlamaConfig(**TINY)).parameters())
    assert source.endswith("config.json")


@pytest.mark.parametrize("name", sorted(KNOWN_CONFIGS))
def test_built_in_configs_count_what_transformers_builds(name):
    config = AutoConfig.for_model(**KNOWN_CONFIGS[name])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert model_shape(f"org/{name}")[0].num_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("model_type, extra", [("qwen2", {}), ("qwen3", {"head_dim": 32, "attention_bias": True}),
                                               ("llama", {"attention_bias": True, "mlp_bias": True}), ("mistral", {})])
def test_biases_and_norms_per_layout(model_type, extra):
    config = AutoConfig.for_model(model_type, **TINY, **extra)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert ModelShape.from_config(config.to_dict(), "test").num_params == sum(p.numel() for p in model.parameters())


def test_qwen25_7b_has_its_published_size():
    assert model_shape("Qwen/Qwen2.5-7B-Instruct")[0].num_params == 7_615_616_512


def test_compute_budget_by_hand(tiny_dir):
    config = tiny_config(tiny_dir)
    budget = compute_budget(config, train_prompts=100, mean_prompt=16, mean_completion=16)
    # ceil(100 x 1.5 / 8) = 19 steps; 19 x 8 prompts x G=4 = 608 completions x 16 tokens = 9,728 generated.
    assert (budget.steps, budget.completions, budget.generated_tokens) == (19, 608, 9_728)
    # 608 x (16 + 16) = 19,456 per pass; 2 policy passes (num_iterations) + reference (kl > 0) + old policy.
    assert (budget.policy_passes, budget.reference_passes, budget.old_policy_passes) == (2, 1, 1)
    assert budget.learner_tokens == 77_824

    capped = compute_budget(tiny_config(tiny_dir, "train.max_steps=10", "algorithm.kl_coef=0", "algorithm.num_iterations=1"), 100, 16, 16)
    assert (capped.steps, capped.completions, capped.learner_tokens) == (10, 320, 320 * 32)


def test_memory_by_hand_with_lora_and_vllm(tiny_dir):
    memory = estimate_memory(tiny_config(tiny_dir), model_shape(str(tiny_dir))[0], mean_prompt=16, gpu=4 * MiB)
    # LoRA r8 on q (64 -> 64) and v (64 -> 32): 8 x (128 + 96) x 2 layers = 3,584 float32 parameters.
    # Activations: T = train.micro_batch_tokens = 192 tokens; a layer saves 4x64 + 2x64 + 2x32 + 4x128 + 8x2 = 976 values.
    # vLLM: 0.5 x 4 MiB = 2,097,152 reserved - 345,344 weights = 1,751,808 bytes of KV cache at 2x2x32x4 = 512 per token.
    assert memory.components == {
        "policy weights": 86_336 * 4,
        "reference": 0,
        "LoRA parameters": 3_584 * 4,
        "gradients": 3_584 * 4,
        "optimizer state": 2 * 3_584 * 4,
        "activations": 192 * 2 * 976 * 4,
        "logits": 192 * 96 * 8,
        "vLLM weights": 86_336 * 4,
        "vLLM KV cache": 1_751_808,
    }
    assert "gradient checkpointing off (on: 0.0 GiB)" in memory.notes["activations"]
    assert memory.kv_cache_tokens == 3_421
    # No sleep mode: learner (402,688 resident + 1,499,136 + 147,456) and vLLM's 2,097,152 at once.
    assert memory.peak == 402_688 + 1_499_136 + 147_456 + 2_097_152 == 4_146_432
    assert memory.fits
    # vLLM takes half of any GPU, so the learner's 2,049,280 bytes need a GPU of at least 4,098,560.
    smaller = estimate_memory(tiny_config(tiny_dir), model_shape(str(tiny_dir))[0], 16, gpu=4_000_000)
    assert smaller.peak == 2_049_280 + 2_000_000 and not smaller.fits


def test_memory_with_sleep_mode_checkpointing_and_full_finetuning(tiny_dir):
    shape = model_shape(str(tiny_dir))[0]
    sleeping = estimate_memory(tiny_config(tiny_dir, "sampler.enable_sleep_mode=true", "model.gradient_checkpointing=true"), shape, 16, 4 * MiB)
    # Checkpointing keeps each layer's input (2 x 64 values) and recomputes one layer (976 values).
    assert sleeping.components["activations"] == 192 * (2 * 64 + 976) * 4 == 847_872
    # The larger of sampling (402,688 + 2,097,152) and learning (402,688 + 847,872 + 147,456).
    assert sleeping.peak == 2_499_840

    full = estimate_memory(tiny_config(tiny_dir, "model.lora.enabled=false", "sampler=hf", "sampler.batch_size=64"), shape, 16, 4 * MiB)
    weights = 345_344
    assert full.components["reference"] == full.components["gradients"] == weights
    assert full.components["optimizer state"] == 2 * weights
    assert full.components["activations"] == 192 * 2 * 960 * 4
    assert full.components["generate KV cache"] == 64 * 48 * 512
    # Resident: weights, reference, gradients and 2 moments = 5 x weights. Generation (+ 1,572,864 of KV cache)
    # and learning (+ 1,474,560 activations + 147,456 logits) take turns.
    assert full.peak == max(5 * weights + 1_572_864, 5 * weights + 1_474_560 + 147_456) == 3_348_736


def test_vllm_kv_cache_of_a_fixed_size(tiny_dir):
    memory = estimate_memory(tiny_config(tiny_dir, "sampler.kv_cache_gb=0.001"), model_shape(str(tiny_dir))[0], 16, 4 * MiB)
    # round(0.001 x 2^30) = 1,073,742 bytes at 512 per token; vLLM holds it next to its 345,344 bytes of weights.
    assert memory.components["vLLM KV cache"] == 1_073_742 and memory.kv_cache_tokens == 2_097
    assert memory.peak == 2_049_280 + 345_344 + 1_073_742


def test_vllm_without_room_for_a_kv_cache_does_not_fit(tiny_dir):
    memory = estimate_memory(tiny_config(tiny_dir, "sampler.gpu_memory_utilization=0.1"), model_shape(str(tiny_dir))[0], 16, 2 * MiB)
    assert memory.components["vLLM KV cache"] == 0 and not memory.fits


def test_train_prompts_from_the_config_or_the_data(tmp_path):
    assert count_train_prompts(Config(data=DataConfig(name="harbor", num_train=28_000)))[0] == 28_000
    (tmp_path / "train.jsonl").write_text('{"question": "a", "answer": "1"}\n\n{"question": "b", "answer": "2"}\n'
                                          '{"question": "c", "answer": "3"}\n')
    # The rows the trainer trains on: the last data.num_select are the select split.
    rows = DataConfig(name="jsonl", train_path=str(tmp_path / "train.jsonl"), num_select=1)
    assert count_train_prompts(Config(data=rows)) == (2, f"train rows of {tmp_path / 'train.jsonl'}")
    with pytest.raises(GrpoError, match="data.train_path=nowhere.jsonl: no such file"):
        count_train_prompts(Config(data=DataConfig(name="jsonl", train_path="nowhere.jsonl")))


def test_gsm8k_train_prompts_leave_the_select_split_out(gsm8k):
    assert count_train_prompts(compose(["recipe=gsm8k", *gsm8k]))[0] == 7_273


def test_harbor_math_plan_on_the_cli(capsys):
    main(["plan", "recipe=harbor_math", "--gpu-memory-gib", "80"])
    out = capsys.readouterr().out
    # 28,000 x 1.5 / 32 = 1,312.5 -> 1,313 steps x 32 x G=12 = 504,192 completions x 512 / 2 tokens.
    assert "504,192 (G = 12)" in out and "129,073,152" in out
    assert "256 tokens (assumed: sampler.max_new_tokens / 2" in out
    assert "7.62B parameters x 2 bytes" in out
    assert "none: the base model with the adapter disabled" in out
    assert "GPU 80.0 GiB, --gpu-memory-gib" in out
    assert "\nfits: " in out


def test_plan_errors(tmp_path, tiny_dir):
    with pytest.raises(GrpoError, match="model.name_or_path=nowhere/Unknown-1B: no config.json there and not a built-in model"):
        model_shape("nowhere/Unknown-1B")
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "n_embd": 64}')
    with pytest.raises(GrpoError, match="model_type 'gpt2' has no memory formula"):
        model_shape(str(tmp_path))
    with pytest.raises(ConfigError, match="'c_attn' is not a linear layer of this model"):
        estimate_memory(tiny_config(tiny_dir, "model.lora.target_modules=[c_attn]"), model_shape(str(tiny_dir))[0], 16, MiB)


def test_bfloat16_full_finetuning_counts_float32_master_weights_and_the_autocast_copy(tiny_dir):
    shape = model_shape(str(tiny_dir))[0]
    config = tiny_config(tiny_dir, "model.dtype=bfloat16", "model.lora.enabled=false", "algorithm.kl_coef=0.04")
    memory = estimate_memory(config, shape, 16, 4 * MiB)
    params = 86_336
    # float32 master weights, gradients and moments; the reference and vLLM's copy in bfloat16, and the
    # bfloat16 weights autocast makes for the forward pass, alive until backward.
    assert memory.components["policy weights"] == params * 4
    assert memory.components["gradients"] == params * 4
    assert memory.components["optimizer state"] == 2 * params * 4
    assert memory.components["reference"] == memory.components["vLLM weights"] == params * 2
    assert memory.components["autocast copy"] == params * 2
    learner = 4 * params * 4 + params * 2 + memory.components["activations"] + memory.components["logits"] + params * 2
    assert memory.peak == learner + round(0.5 * 4 * MiB)


def test_memory_per_gpu_under_fsdp2_by_hand(tiny_dir):
    """Full fine-tuning of the tiny model on 4 GPUs: float32 shards of the weights, gradients and AdamW moments,
    the reference's bf16 shards, two gathered bf16 layers plus embeddings, and each rank's sampler copy."""
    config = compose(["recipe=demo", f"model.name_or_path={tiny_dir}", "model.lora.enabled=false",
                      "algorithm.kl_coef=0.1", "model.dtype=bfloat16"])
    shape, _ = model_shape(str(tiny_dir))
    single = estimate_memory(config, shape, 100, 80 * GiB)
    sharded = estimate_memory(config, shape, 100, 80 * GiB, nproc=4)
    P = shape.num_params
    layer = sum(i * o for i, o in shape.linears().values())
    assert sharded.components["policy weights"] == P * 4 // 4
    assert sharded.components["reference"] == P * 2 // 4
    assert sharded.components["gradients"] == P * 4 // 4
    assert sharded.components["optimizer state"] == 2 * P * 4 // 4
    assert sharded.components["gathered layers"] == (P - shape.num_layers * layer + 2 * layer) * 2
    assert sharded.components["sampler copy"] == P * 2
    assert sharded.components["activations"] == single.components["activations"]
    resident = sum(sharded.components[k] for k in ("policy weights", "reference", "gradients", "optimizer state",
                                                   "gathered layers", "sampler copy"))
    learner = resident + sharded.components["activations"] + sharded.components["logits"]
    assert sharded.peak == max(resident + sharded.components["generate KV cache"], learner)


def test_plan_nproc_on_the_cli(capsys):
    main(["plan", "recipe=harbor_math", "model.lora.enabled=false", "--nproc", "8"])
    out = capsys.readouterr().out
    assert "per GPU of 8, FSDP2" in out and "/ 8 GPUs (FSDP2 shards)" in out and "sampler copy" in out
