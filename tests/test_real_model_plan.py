"""`grpo plan`'s memory estimate against the measured peak of real learner steps on SmolLM2-135M-Instruct
(the real-model tier, slow): full fine-tuning with a reference copy, and LoRA on q/k/v/o.

The learner runs in a subprocess: a small first step (AdamW allocates its state), then a step on a batch shaped
as the plan assumes, every prompt of its --mean-prompt-tokens and every completion sampler.max_new_tokens long.
Measured = the process's peak resident set (VmHWM; not ru_maxrss, which starts at the parent's peak: Linux
carries it across exec, and pytest's process may have run a vLLM engine) - its resident set before the model
loads. Large allocations are given back to the system when freed (MALLOC_MMAP_THRESHOLD_): glibc's heap
otherwise keeps freed memory, and the peak would count memory no tensor holds (the plan estimates what a GPU
allocator counts as allocated).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import GRPO, REAL_MODEL

pytestmark = [pytest.mark.slow, pytest.mark.real_model]

PROMPT_TOKENS = 64
SETTINGS = [f"model.name_or_path={REAL_MODEL}", "model=hf", "model.dtype=float32", "sampler.max_new_tokens=48",
            "algorithm.group_size=4", "train.prompts_per_step=2", "algorithm.kl_coef=0.04"]

SCRIPT = """
import json, sys
import torch
from grpo_cli.compose import compose
from grpo_cli.training.learner import Learner, RolloutBatch
from grpo_cli.models import load_model
from grpo_cli.sampler.base import Completion

def resident(field="VmRSS"):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

config = compose(json.loads(sys.argv[1]))
prompt_tokens, G, P = int(sys.argv[2]), config.algorithm.group_size, config.train.prompts_per_step
T, vocab = config.sampler.max_new_tokens, 49152
before = resident()
learner = Learner(config, load_model(config.model), total_steps=2)
generator = torch.Generator().manual_seed(0)
def tokens(n):
    return torch.randint(3, vocab, (n,), generator=generator).tolist()
def step(prompts, group_size, completion_tokens):
    prompts = [tokens(prompt_tokens) for _ in range(prompts)]
    groups = [[Completion(tokens(completion_tokens), [-1.0] * completion_tokens, "", "length")
               for _ in range(group_size)] for _ in prompts]
    learner.train_on(RolloutBatch.build(prompts, groups, torch.randn(len(prompts) * group_size, generator=generator)))
step(1, 2, 4)  # a small first step: AdamW allocates its state, as every later step finds it
step(P, G, T)
print(json.dumps({"measured": resident("VmHWM") - before}))
"""


def planned_peak(settings: list[str]) -> float:
    result = subprocess.run([GRPO, "plan", *settings, "--mean-prompt-tokens", str(PROMPT_TOKENS)],
                            capture_output=True, text=True, check=True)
    print(result.stdout)
    [peak] = [line.split()[1] for line in result.stdout.splitlines() if line.lstrip().startswith("peak ")]
    return float(peak)


def measured_peak(settings: list[str]) -> float:
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(settings), str(PROMPT_TOKENS)],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])["measured"] / 1024**3


@pytest.mark.parametrize("setting", [
    ["model.lora.enabled=false"],
    ["model.lora.enabled=true", "model.lora.target_modules=[q_proj,k_proj,v_proj,o_proj]"],
], ids=["full", "lora"])
def test_the_plan_is_within_30_percent_of_the_measured_peak(real_model, setting):
    settings = SETTINGS + setting
    planned, measured = planned_peak(settings), measured_peak(settings)
    print(f"{' '.join(setting)}: grpo plan {planned:.2f} GiB, measured {measured:.2f} GiB ({planned / measured - 1:+.0%})")
    assert abs(planned / measured - 1) <= 0.3
