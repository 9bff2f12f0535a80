"""`grpo merge`: weight * A + (1 - weight) * B per tensor, exact at the ends, clear errors on mismatch."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from tiny_checkpoints import save_lora_checkpoint, save_tiny_llama, save_tokenizer
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from grpo_cli.cli import main
from grpo_cli.errors import GrpoError
from grpo_cli.export import merge_models


def same_bits(x: torch.Tensor, y: torch.Tensor) -> bool:
    return x.dtype == y.dtype and torch.equal(x.contiguous().view(torch.uint8), y.contiguous().view(torch.uint8))


def saved_tensors(model_dir) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


@pytest.fixture(scope="module", params=[torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def pair(request, tmp_path_factory):
    """Two random tiny Llamas; A's final norm is all 1.0 (the init), B's all 2.0."""
    root = tmp_path_factory.mktemp("merge")
    save_tiny_llama(root / "a", seed=1, dtype=request.param)
    b = save_tiny_llama(root / "b", seed=2, dtype=request.param)
    with torch.no_grad():
        b.model.norm.weight.fill_(2.0)
    b.save_pretrained(root / "b")
    return root


@pytest.mark.parametrize("weight, source", [(1.0, "a"), (0.0, "b")])
def test_end_weights_reproduce_an_input_bit_for_bit(pair, weight, source):
    out = pair / f"merged_{weight}"
    merge_models(pair / "a", pair / "b", weight, out)
    merged, expected = saved_tensors(out), saved_tensors(pair / source)
    assert merged.keys() == expected.keys()
    for name in expected:
        assert same_bits(merged[name], expected[name]), name


def test_weight_07_gives_07_a_plus_03_b_per_tensor(pair, capsys):
    out = pair / "merged_0.7"
    main(["merge", str(pair / "a"), str(pair / "b"), "--weight", "0.7", "--out", str(out)])
    assert "merged 0.7 x" in capsys.readouterr().out
    a, b, merged = saved_tensors(pair / "a"), saved_tensors(pair / "b"), saved_tensors(out)
    dtype = a["model.norm.weight"].dtype
    # 0.7 * 1.0 + 0.3 * 2.0 = 1.3, stored in the inputs' dtype (1.296875 in bfloat16).
    assert torch.equal(merged["model.norm.weight"], torch.full((64,), 1.3).to(dtype))
    for name in a:
        assert merged[name].dtype == dtype
        expected = (0.7 * a[name].float() + 0.3 * b[name].float()).to(dtype)
        torch.testing.assert_close(merged[name], expected, rtol=0, atol=1e-6, msg=name)
        assert not torch.equal(merged[name], a[name]) or torch.equal(a[name], b[name]), name


def test_tied_embeddings_are_merged_once(tmp_path):
    a = save_tiny_llama(tmp_path / "a", seed=1, tie_word_embeddings=True)
    b = save_tiny_llama(tmp_path / "b", seed=2, tie_word_embeddings=True)
    merge_models(tmp_path / "a", tmp_path / "b", 0.7, tmp_path / "out")
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    expected = 0.7 * a.model.embed_tokens.weight + 0.3 * b.model.embed_tokens.weight
    torch.testing.assert_close(merged.model.embed_tokens.weight, expected, rtol=0, atol=1e-6)
    assert merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()


def test_adapter_checkpoint_is_merged_into_its_base_first(tmp_path):
    base = save_tiny_llama(tmp_path / "base", seed=0)
    step_dir = tmp_path / "run" / "checkpoints" / "step_000003"
    policy = save_lora_checkpoint(step_dir, tmp_path / "base", seed=3)
    merge_models(step_dir, tmp_path / "base", 0.5, tmp_path / "out")

    # LoRA: W' = W + (alpha / r) * B @ A with alpha=8, r=4; merged = 0.5 * W' + 0.5 * W = W + B @ A.
    lora = policy.base_model.model.model.layers[1].self_attn.q_proj
    w = base.model.layers[1].self_attn.q_proj.weight
    expected = w + lora.lora_B["default"].weight @ lora.lora_A["default"].weight
    merged = saved_tensors(tmp_path / "out")
    torch.testing.assert_close(merged["model.layers.1.self_attn.q_proj.weight"], expected, rtol=0, atol=1e-6)
    assert same_bits(merged["model.layers.1.mlp.up_proj.weight"], base.model.layers[1].mlp.up_proj.weight)
    assert not (tmp_path / "out" / "adapter_config.json").exists()


def test_different_architectures_are_refused(tmp_path):
    save_tiny_llama(tmp_path / "llama", seed=0)
    Qwen2ForCausalLM(Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                 intermediate_size=128, vocab_size=96)).save_pretrained(tmp_path / "qwen")
    save_tokenizer(tmp_path / "qwen")
    with pytest.raises(GrpoError, match="different architectures, LlamaForCausalLM and Qwen2ForCausalLM"):
        merge_models(tmp_path / "llama", tmp_path / "qwen", 0.5, tmp_path / "out")


def test_mismatching_tensors_are_named(tmp_path):
    save_tiny_llama(tmp_path / "a", seed=0)
    save_tiny_llama(tmp_path / "narrow", seed=0, intermediate_size=96)
    save_tiny_llama(tmp_path / "deep", seed=0, num_hidden_layers=3)
    with pytest.raises(GrpoError, match=r"tensor model\.layers\.0\.mlp\.down_proj\.weight has shape \[64, 128\] in A and \[64, 96\] in B"):
        merge_models(tmp_path / "a", tmp_path / "narrow", 0.5, tmp_path / "out")
    with pytest.raises(GrpoError, match=r"tensor model\.layers\.2\.\S+ is only in A"):
        merge_models(tmp_path / "deep", tmp_path / "a", 0.5, tmp_path / "out")
    with pytest.raises(GrpoError, match=r"tensor model\.layers\.2\.\S+ is only in B"):
        merge_models(tmp_path / "a", tmp_path / "deep", 0.5, tmp_path / "out")


def test_cli_errors_are_one_line(tmp_path, capsys):
    save_tiny_llama(tmp_path / "a", seed=0)
    capsys.readouterr()
    cases = [
        (["--weight", "1.5", "--out", str(tmp_path / "out")], "--weight 1.5: must be in [0, 1]"),
        (["--weight", "0.5", "--out", str(tmp_path / "a")], "is also an input"),
    ]
    for flags, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["merge", str(tmp_path / "a"), str(tmp_path / "a"), *flags])
        err = capsys.readouterr().err
        assert exit_info.value.code == 1 and err.count("\n") == 1 and message in err
    with pytest.raises(SystemExit):
        main(["merge", str(tmp_path / "a"), str(tmp_path / "missing"), "--weight", "0.5", "--out", str(tmp_path / "o")])
    assert "missing: not a model directory (no config.json) nor a LoRA adapter" in capsys.readouterr().err


def all_tensors(model_dir) -> dict[str, torch.Tensor]:
    return {name: t for path in sorted(model_dir.glob("*.safetensors")) for name, t in load_file(path).items()}


def merged_by_loading_whole_models(a_dir, b_dir, weight, out_dir):
    """The merge as it was before streaming: both models loaded whole (adapters merged by peft), summed, saved."""
    from peft import PeftModel

    from grpo_cli.export import adapter_base, is_adapter

    def load(model_dir):
        if is_adapter(model_dir):
            base = AutoModelForCausalLM.from_pretrained(adapter_base(model_dir), dtype="auto")
            return PeftModel.from_pretrained(base, str(model_dir)).merge_and_unload()
        return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="auto")

    model_a, model_b = load(a_dir), load(b_dir)
    state_b = model_b.state_dict()
    merged = {name: (weight * a.float() + (1.0 - weight) * state_b[name].float()).to(a.dtype)
              for name, a in model_a.state_dict().items()}
    model_a.load_state_dict(merged)
    model_a.save_pretrained(out_dir)


@pytest.mark.parametrize("case", ["fp32", "bf16", "tied", "sharded", "adapter_fp32", "adapter_bf16"])
def test_streamed_merge_equals_the_whole_model_merge_and_never_loads_a_model(tmp_path, monkeypatch, case):
    dtype = torch.bfloat16 if case.endswith("bf16") else torch.float32
    save_tiny_llama(tmp_path / "a", seed=1, dtype=dtype, tie_word_embeddings=case == "tied")
    save_tiny_llama(tmp_path / "b", seed=2, dtype=dtype, tie_word_embeddings=case == "tied")
    a_dir = tmp_path / "a"
    if case == "sharded":
        AutoModelForCausalLM.from_pretrained(str(a_dir)).save_pretrained(a_dir, max_shard_size="40KB")
        (a_dir / "model.safetensors").unlink()
        assert len(list(a_dir.glob("model-*.safetensors"))) > 2
    if case.startswith("adapter"):
        a_dir = tmp_path / "run" / "checkpoints" / "step_000003"
        save_lora_checkpoint(a_dir, tmp_path / "a", seed=3)
    merged_by_loading_whole_models(a_dir, tmp_path / "b", 0.7, tmp_path / "old")
    expected = all_tensors(tmp_path / "old")

    def refuse(*args, **kwargs):
        raise AssertionError("the streamed merge loaded a whole model")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr("transformers.PreTrainedModel.from_pretrained", refuse)
    monkeypatch.setattr("peft.PeftModel.from_pretrained", refuse)
    merge_models(a_dir, tmp_path / "b", 0.7, tmp_path / "new")
    merged = all_tensors(tmp_path / "new")
    assert merged.keys() == expected.keys() and len(merged) > 10
    for name in expected:
        assert same_bits(merged[name], expected[name]), name
    monkeypatch.undo()
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "new"))
    assert reloaded.dtype == dtype and not any(p.is_meta for p in reloaded.parameters())
