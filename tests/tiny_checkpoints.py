"""Tiny models and run directories built on the spot for the export, merge and plan tests (nothing downloads)."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CORPUS = ["A crate holds 12 boxes and each box holds 4 apples.", "FINAL: 48", "How many apples are on the shelf?"]


def save_tokenizer(out_dir: Path) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(CORPUS * 5, trainers.BpeTrainer(vocab_size=96, special_tokens=["<unk>", "<eos>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", unk_token="<unk>")
    fast.save_pretrained(out_dir)
    return fast


def save_tiny_llama(out_dir: Path, seed: int, dtype: torch.dtype = torch.float32, **config) -> LlamaForCausalLM:
    """A random LlamaForCausalLM (hidden 64, 2 layers unless overridden) with a tokenizer, saved to out_dir."""
    shape = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=96)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**(shape | config))).to(dtype).eval()
    model.save_pretrained(out_dir)
    save_tokenizer(out_dir)
    return model


def save_lora_checkpoint(step_dir: Path, base_dir: Path, seed: int) -> PeftModel:
    """A LoRA adapter on the model in base_dir, with every lora_B perturbed so the adapter changes the output
    (peft initialises lora_B to zero), saved to step_dir with a tokenizer and a trainer_state.pt."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir.resolve()), dtype="auto")
    policy = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    policy.eval().save_pretrained(step_dir)
    save_tokenizer(step_dir)
    torch.save({"step": 3}, step_dir / "trainer_state.pt")
    return policy


def token_logprobs(model, token_ids: list[int]) -> torch.Tensor:
    """log p(token_t | tokens before t) for t >= 1, in float32."""
    ids = torch.tensor([token_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    return torch.log_softmax(logits[0, :-1], dim=-1).gather(-1, ids[0, 1:, None])[:, 0]
