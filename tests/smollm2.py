"""What the real-model tests (test_real_model*.py) share about SmolLM2-135M-Instruct: its token ids, the GRPO
settings their steps use, and transformers' own greedy decoding and log-probs to hold the other paths to."""

from __future__ import annotations

import torch

from conftest import REAL_MODEL

END_OF_TURN = 2  # <|im_end|>: SmolLM2's EOS, and its pad token

# A question SmolLM2 answers greedily in a few tokens, and one it answers at length.
SHORT_QUESTION = "What is the capital of France? Answer in one word."
SHORT_ANSWER = "The capital of France is Paris."
LONG_QUESTION = "Write a long story about a ship at sea."

# GRPO steps on Harbor level 1 with a prompt that asks for the marker the verifier reads.
GRPO_SETTINGS = [
    f"model.name_or_path={REAL_MODEL}", "model=hf", "model.dtype=float32", "data.use_chat_template=true",
    "data.difficulty=[1]", "data.prompt_template='{prompt} Answer with FINAL: <number>.'", "algorithm.group_size=4",
    "train.prompts_per_step=2", "sampler.max_new_tokens=24", "algorithm.kl_coef=0.04",
    # Rewards differ within every group (SmolLM2 is rarely right at first), so every step updates the policy.
    "verifier.rewards.length_penalty=5.0", "verifier.num_workers=1",
]
MODES = {
    "full": ["optimizer.lr=1e-5"],
    "lora": ["model.lora.enabled=true", "model.lora.target_modules=[q_proj,k_proj,v_proj,o_proj]", "optimizer.lr=1e-3"],
}


def greedy(model, prompt: list[int], tokens: int, exactly: bool = False) -> list[int]:
    """transformers' own greedy decoding of `prompt` (alone: no padding): up to `tokens` tokens, or exactly that
    many (the EOS held back, as vLLM's min_tokens does)."""
    model.eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             do_sample=False, max_new_tokens=tokens, min_new_tokens=tokens if exactly else None)
    return out[0, len(prompt):].tolist()


def sequence_logprobs(model, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) for t >= 1, from one plain forward pass in eval mode."""
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
