"""LoRA training: only the adapter moves, the reference is the adapter-disabled base, checkpoints hold the adapter."""

import copy

import pytest
import torch
from safetensors.torch import load_file
from test_learner import TEMPERATURE, make_batch, make_config, tiny_llama

from grpo_cli.config import LoraConfig
from grpo_cli.errors import GrpoError
from grpo_cli.models import load_checkpoint_weights
from grpo_cli.training.learner import Learner, completion_logprobs, shares_prompt


def lora_config(**algorithm):
    config = make_config(lr=1e-2, **algorithm)
    config.model.lora = LoraConfig(enabled=True, rank=4, alpha=8.0, target_modules=["q_proj", "v_proj"])
    return config


def starting_logprobs(model, batch):
    with torch.no_grad():
        return completion_logprobs(model, batch, TEMPERATURE)[0].masked_fill(~batch.completion_mask, 0.0)


def test_lora_trains_only_the_adapter_against_the_base_as_reference():
    model = tiny_llama()
    starting_model = copy.deepcopy(model)
    base_weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    base_parameters = dict(model.named_parameters())  # peft wraps the same tensors in place

    learner = Learner(lora_config(kl_coef=0.1), model, total_steps=3)
    adapter_start = {name: p.detach().clone() for name, p in learner.policy.named_parameters() if p.requires_grad}
    assert adapter_start and all("lora_" in name for name in adapter_start)
    batch = make_batch(learner.algorithm)
    expected_reference = starting_logprobs(starting_model, batch)

    for _ in range(3):
        batch.ref_logprobs = learner.reference_logprobs(batch)
        torch.testing.assert_close(batch.ref_logprobs, expected_reference, atol=1e-6, rtol=0)
        assert learner.step(batch)["nonfinite"] == 0.0
    torch.testing.assert_close(learner.reference_logprobs(batch), expected_reference, atol=1e-6, rtol=0)

    for name, p in base_parameters.items():
        assert torch.equal(p, base_weights[name]), name
    for name, p in learner.policy.named_parameters():
        if name in adapter_start:
            assert not torch.equal(p, adapter_start[name]), name
    policy_logp = learner.policy_logprobs(batch)
    assert (policy_logp - expected_reference).abs().max() > 1e-3  # the adapter changed the policy


def test_shared_prompt_gives_the_unshared_logprobs_and_adapter_gradients():
    batch = make_batch(lora_config().algorithm)
    results = []
    for share_prompt in (True, False):
        learner = Learner(lora_config(), tiny_llama(), total_steps=1)
        for p in learner.trainable_parameters:  # B starts at 0: give the adapter an effect on the forward pass
            p.data.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
        assert shares_prompt(learner.policy)
        logp, _ = completion_logprobs(learner.policy, batch, TEMPERATURE, top_k=8, top_p=0.9, share_prompt=share_prompt)
        (logp.masked_fill(~batch.completion_mask, 0) * batch.advantages[:, None]).sum().backward()
        grads = {name: p.grad for name, p in learner.policy.named_parameters() if p.requires_grad}
        results.append((logp.masked_fill(~batch.completion_mask, 0), grads))
    (shared_logp, shared_grads), (logp, grads) = results
    torch.testing.assert_close(shared_logp, logp, atol=1e-6, rtol=0)
    assert shared_grads.keys() == grads.keys() and len(grads) == 8  # q_proj and v_proj, A and B, 2 layers
    for name, grad in grads.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(shared_grads[name], grad, atol=1e-5, rtol=1e-5, msg=name)


def test_lora_checkpoint_holds_only_the_adapter_and_restores_the_policy(tmp_path):
    learner = Learner(lora_config(), tiny_llama(), total_steps=2)
    batch = make_batch(learner.algorithm)
    for _ in range(2):
        learner.step(batch)

    learner.policy.save_pretrained(tmp_path)  # what a checkpoint writes
    state = load_file(tmp_path / "adapter_model.safetensors")
    assert state and all("lora_A" in key or "lora_B" in key for key in state)
    adapter_size = sum(t.numel() for t in state.values())
    full_size = sum(t.numel() for t in tiny_llama().state_dict().values())
    assert adapter_size < 0.05 * full_size

    restored = Learner(lora_config(), tiny_llama(), total_steps=2)
    load_checkpoint_weights(restored.policy, tmp_path)
    torch.testing.assert_close(restored.policy_logprobs(batch), learner.policy_logprobs(batch), atol=0, rtol=0)


def test_an_adapter_of_other_lora_settings_is_a_clear_error(tmp_path):
    Learner(lora_config(), tiny_llama(), total_steps=1).policy.save_pretrained(tmp_path)
    config = lora_config()
    config.model.lora.target_modules = ["q_proj"]
    other = Learner(config, tiny_llama(), total_steps=1)
    with pytest.raises(GrpoError, match=r"do not match the model \(missing \[\], unexpected \['base_model.*v_proj"):
        load_checkpoint_weights(other.policy, tmp_path)


def test_unknown_lora_target_is_a_clear_error():
    config = lora_config()
    config.model.lora.target_modules = ["q_proj", "c_attn"]
    expected = r"c_attn matches no layer of LlamaForCausalLM; its layers with weight matrices are .*q_proj"
    with pytest.raises(GrpoError, match=expected):
        Learner(config, tiny_llama(), total_steps=1)


def test_lora_on_a_bfloat16_base_trains_float32_adapters():
    learner = Learner(lora_config(), tiny_llama().to(torch.bfloat16), total_steps=2)
    batch = make_batch(learner.algorithm)
    adapter_start = {n: p.detach().clone() for n, p in learner.policy.named_parameters() if p.requires_grad}
    assert all(p.dtype == torch.float32 for p in learner.policy.parameters() if p.requires_grad)
    assert all(p.dtype == torch.bfloat16 for p in learner.policy.parameters() if not p.requires_grad)
    assert learner.step(batch)["nonfinite"] == 0.0
    assert all(s.dtype == torch.float32 for state in learner.optimizer.state.values() for s in state.values() if s.dim())
    changed = [not torch.equal(p, adapter_start[n]) for n, p in learner.policy.named_parameters() if p.requires_grad]
    assert any(changed)
