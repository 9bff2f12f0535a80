"""Model loading and `grpo init-model`: a real tiny Llama and tokenizer, written and read back from disk."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import GRPO
from grpo_cli.config import ModelConfig
from grpo_cli.errors import GrpoError
from grpo_cli.models import load_model, load_tokenizer, resolve_device, resolve_dtype


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("init") / "tiny"
    result = subprocess.run(
        [GRPO, "init-model", "recipe=demo", f"sft.init_from={out}", "data.num_train=2000", "data.num_eval=10"],
        capture_output=True, text=True, check=True,
    )
    assert f"wrote a tiny Llama to {out}" in result.stdout
    return out


def test_init_model_dir_loads_with_auto_classes(tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["head_dim"]) == (128, 4, 64)  # recipes/demo.yaml
    assert config["vocab_size"] == len(tokenizer) <= 512
    assert json.loads((tiny_dir / "generation_config.json").read_text())["eos_token_id"] == tokenizer.eos_token_id
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token) == ("<pad>", "<s>", "</s>")
    ids = tokenizer("Bay A has 1234 crates.\n")["input_ids"]
    logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tokenizer))


def test_tokenizer_splits_digits_and_round_trips(tiny_dir):
    tokenizer = load_tokenizer(str(tiny_dir))
    ids = tokenizer("1234")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.convert_ids_to_tokens(ids[1:]) == ["1", "2", "3", "4"]
    text = "The cold room has 31 bins.\n31 + 17 = 48\nFINAL: 48 kg, 3/4, 25% and ünïcode"
    ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # Words of the task are single tokens: the tokenizer was trained on its text.
    assert len(tokenizer(" truck delivers", add_special_tokens=False)["input_ids"]) == 2


def test_load_model_dtype_and_device(tiny_dir):
    model = load_model(ModelConfig(name_or_path=str(tiny_dir), gradient_checkpointing=True))
    assert model.dtype == resolve_dtype("auto", resolve_device("auto"))
    assert model.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert model.is_gradient_checkpointing
    assert load_model(ModelConfig(name_or_path=str(tiny_dir), dtype="bfloat16", device="cpu")).dtype == torch.bfloat16


def test_nonexistent_model_path_is_one_line_error(tmp_path):
    missing = tmp_path / "no" / "model"
    with pytest.raises(GrpoError, match=f"model directory {missing} does not exist"):
        load_tokenizer(str(missing))
    with pytest.raises(GrpoError, match=f"model directory {missing} does not exist"):
        load_model(ModelConfig(name_or_path=str(missing)))
    result = subprocess.run(
        [GRPO, "sft", "recipe=demo", f"sft.init_from={missing}", "data.num_train=50", "data.num_eval=5"],
        capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: model directory {missing} does not exist") and result.stderr.count("\n") == 1


def test_unreadable_model_dir_is_one_line_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(GrpoError, match=f"cannot load a model from {tmp_path}: ") as error:
        load_model(ModelConfig(name_or_path=str(tmp_path)))
    assert "\n" not in str(error.value)


def test_head_dim_below_64_is_rejected_before_building():
    result = subprocess.run([GRPO, "init-model", "model.tiny.num_heads=8"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == (
        "error: model.tiny.hidden_size=256, model.tiny.num_heads=8: head_dim = hidden_size / num_heads must be a "
        "whole number >= 64 (vLLM on CPU needs it)\n"
    )


@pytest.mark.parametrize("tied", [True, False])
def test_checkpoint_weights_may_omit_only_a_tied_lm_head(tmp_path, tied):
    from safetensors.torch import load_file, save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from grpo_cli.errors import GrpoError
    from grpo_cli.models import load_checkpoint_weights

    def model() -> LlamaForCausalLM:
        config = LlamaConfig(vocab_size=50, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=1, num_key_value_heads=1, tie_word_embeddings=tied)
        return LlamaForCausalLM(config)

    model().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights.pop("lm_head.weight", None)  # transformers leaves a tied lm_head out anyway
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    restored = model()
    if tied:
        load_checkpoint_weights(restored, tmp_path)
        assert torch.equal(restored.lm_head.weight, weights["model.embed_tokens.weight"])
    else:
        with pytest.raises(GrpoError, match=r"missing \['lm_head.weight'\]"):
            load_checkpoint_weights(restored, tmp_path)
