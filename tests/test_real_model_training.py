"""GRPO steps on SmolLM2-135M-Instruct, and what a run's checkpoint becomes (the real-model tier, slow): 2 steps
of full fine-tuning and 2 with LoRA on q/k/v/o (transformers sampler, the trainer's own step, save and resume
functions); the checkpoint, a resumed learner, `grpo export` and `grpo merge` reload in transformers, and in
vLLM, with the same greedy tokens as the model in memory.

vLLM starts once, in a process that never imports grpo_cli, from the full fine-tuning's exported folder; the
full fine-tuning's checkpoint, the LoRA export and the merged folder then go into that engine through its
weight loader (their safetensors tensors, by name), as a weight sync does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import REAL_MODEL
from grpo_cli.cli import main
from grpo_cli.compose import compose
from grpo_cli.data.loaders import load_examples
from grpo_cli.data.prompts import encode_prompt
from grpo_cli.models import checkpoint_weights, load_model, load_pretrained
from grpo_cli.monitoring.monitor import RunMonitor
from grpo_cli.sampler import build_sampler
from grpo_cli.training import checkpoint
from grpo_cli.training.learner import Learner
from grpo_cli.training.trainer import _save, _start_or_resume, grpo_step
from grpo_cli.verifier import build_verifier
from smollm2 import GRPO_SETTINGS, MODES, greedy, sequence_logprobs

pytestmark = [pytest.mark.slow, pytest.mark.real_model]

SETTINGS = [*GRPO_SETTINGS, "sampler.temperature=0.9", "train.max_steps=3"]
GREEDY_TOKENS = 16


@dataclass
class Run:
    """A run of 2 GRPO steps: its config and directory, the learner as the steps left it, per step its metrics
    and how far the step moved the log-probs of a fixed sequence, and the policy's greedy tokens after step 2."""

    config: object
    run_dir: Path
    learner: Learner
    metrics: list[dict]
    moved: list[float]
    greedy: list[list[int]]


def greedy_tokens(model, prompts: list[list[int]]) -> list[list[int]]:
    return [greedy(model, prompt, GREEDY_TOKENS, exactly=True) for prompt in prompts]


@pytest.fixture(scope="module")
def prompts(real_tokenizer):
    config = compose(SETTINGS)
    return [encode_prompt(example, real_tokenizer, config.data) for example in load_examples(config, "eval")[:2]]


def train(mode: str, run_dir: Path, tokenizer, prompts) -> Run:
    """2 GRPO steps as `grpo train` takes them (transformers sampler on the live policy), saved as its step 2."""
    config = compose([*SETTINGS, *MODES[mode], f"train.output_dir={run_dir}"])
    learner = Learner(config, load_model(config.model), total_steps=3)
    sampler = build_sampler(config, learner.full_model, tokenizer)
    examples = load_examples(config, "train")
    fixed = prompts[0] + greedy(learner.policy, prompts[0], GREEDY_TOKENS)
    metrics, moved = [], []
    with build_verifier(config.verifier) as verifier:
        monitor = RunMonitor(config.algorithm.kl_coef, config.train.max_initial_mismatch, config.train.max_retention_drift)
        state = _start_or_resume(config, run_dir, run_dir / "checkpoints", learner, verifier, monitor)
        for step in (1, 2):
            before = sequence_logprobs(learner.policy, fixed)
            step_metrics, _ = grpo_step(config, step, examples[2 * step - 2 : 2 * step], tokenizer, sampler, verifier, learner)
            metrics.append(step_metrics)
            moved.append((sequence_logprobs(learner.policy, fixed) - before).abs().max().item())
        state["step"] = 2
        _save(run_dir / "checkpoints", 2, learner, tokenizer, state, monitor)
    return Run(config, run_dir, learner, metrics, moved, greedy_tokens(learner.policy, prompts))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, real_tokenizer, prompts) -> dict[str, Run]:
    root = tmp_path_factory.mktemp("real-runs")
    return {mode: train(mode, root / mode, real_tokenizer, prompts) for mode in MODES}


@pytest.mark.parametrize("mode", MODES)
def test_each_grpo_step_changes_the_weights_the_sampler_samples_with(runs, mode):
    run = runs[mode]
    for metrics, moved in zip(run.metrics, run.moved):
        print(f"{mode}: reward/std {metrics['reward/std']:.3f}, logprob_mismatch mean "
              f"{metrics['logprob_mismatch/mean']:.1e} max {metrics['logprob_mismatch/max']:.1e}, step moved a fixed "
              f"sequence's log-probs by up to {moved:.1e}")
        assert metrics["nonfinite"] == 0.0 and metrics["grad_norm"] > 0
        # Each update moves the policy far beyond the sampler/learner tolerance...
        assert moved > 1e-2
    # ...and step 2 sampled with step 1's weights: its tokens' log-probs are the learner's before step 2's update.
    assert run.metrics[1]["logprob_mismatch/max"] < 1e-4
    if mode == "lora":
        assert all(not p.requires_grad for name, p in run.learner.policy.named_parameters() if "lora_" not in name)


@pytest.mark.parametrize("mode", MODES)
def test_the_checkpoint_reloads_in_transformers_with_the_same_greedy_tokens(runs, prompts, mode):
    run = runs[mode]
    step_dir = checkpoint.read_pointer(run.run_dir / "checkpoints", "last")
    assert step_dir.name == "step_000002"
    assert (step_dir / ("adapter_config.json" if mode == "lora" else "config.json")).is_file()
    assert greedy_tokens(load_pretrained(str(step_dir)), prompts) == run.greedy


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory) -> dict[str, Path]:
    """Each run's step 2 through `grpo export`, and the full fine-tuning's export merged half and half with the
    starting model through `grpo merge`."""
    out = tmp_path_factory.mktemp("real-exports")
    for mode, run in runs.items():
        main(["export", str(run.run_dir), "--checkpoint", "2", "--out", str(out / mode)])
    main(["merge", str(out / "full"), str(REAL_MODEL), "--weight", "0.5", "--out", str(out / "merged")])
    return {"full": out / "full", "lora": out / "lora", "merged": out / "merged"}


@pytest.fixture(scope="module")
def merged_in_memory(runs):
    """0.5 x the full run's policy at step 2 + 0.5 x the starting model, computed in memory."""
    model = load_pretrained(str(REAL_MODEL), torch.float32)
    policy = dict(checkpoint_weights(runs["full"].learner.policy))
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.copy_(0.5 * policy[name] + 0.5 * tensor)
    return model


@pytest.mark.parametrize("mode", MODES)
def test_export_reloads_in_transformers_with_the_same_greedy_tokens(runs, exported, prompts, mode):
    model = AutoModelForCausalLM.from_pretrained(exported[mode])
    assert not (exported[mode] / "adapter_config.json").exists() and model.config.tie_word_embeddings
    assert greedy_tokens(model, prompts) == runs[mode].greedy


def test_merge_reloads_in_transformers_with_the_in_memory_merge_greedy_tokens(exported, merged_in_memory, prompts):
    merged = AutoModelForCausalLM.from_pretrained(exported["merged"])
    assert greedy_tokens(merged, prompts) == greedy_tokens(merged_in_memory, prompts)


VLLM_SCRIPT = """
import json, os, sys
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine in this process: weights go in by reference
from safetensors.torch import load_file
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
started, others, prompts, max_tokens = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
llm = LLM(model=started, dtype="float32", max_model_len=512, kv_cache_memory_bytes=2**28, seed=0)
params = SamplingParams(temperature=0, max_tokens=max_tokens, min_tokens=max_tokens)
def greedy():
    return [list(out.outputs[0].token_ids) for out in llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params)]
served = {started: greedy()}
for folder in others:
    weights = load_file(os.path.join(folder, "model.safetensors"))
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights.items()), "is_checkpoint_format": True})
    llm.reset_prefix_cache()
    served[folder] = greedy()
assert not any(name.startswith("grpo_cli") for name in sys.modules)
print(json.dumps(served))
"""


def test_vllm_serves_the_checkpoint_the_exports_and_the_merge_with_the_same_greedy_tokens(runs, exported, merged_in_memory, prompts):
    full_checkpoint = checkpoint.read_pointer(runs["full"].run_dir / "checkpoints", "last")
    others = [str(full_checkpoint), str(exported["lora"]), str(exported["merged"])]
    result = subprocess.run(
        [sys.executable, "-I", "-c", VLLM_SCRIPT, str(exported["full"]), json.dumps(others), json.dumps(prompts),
         str(GREEDY_TOKENS)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served[str(exported["full"])] == served[str(full_checkpoint)] == runs["full"].greedy
    assert served[str(exported["lora"])] == runs["lora"].greedy
    assert served[str(exported["merged"])] == greedy_tokens(merged_in_memory, prompts)


@pytest.mark.parametrize("mode", MODES)
def test_resume_restores_the_policy_and_continues_as_the_run_would(runs, real_tokenizer, prompts, mode):
    """Last in the module: it takes step 3 with the run's learner, which the tests above read at step 2."""
    run = runs[mode]
    config = compose([*SETTINGS, *MODES[mode], f"train.output_dir={run.run_dir}", "resume=true"])
    resumed = Learner(config, load_model(config.model), total_steps=3)
    with build_verifier(config.verifier) as verifier:
        monitor = RunMonitor(config.algorithm.kl_coef, config.train.max_initial_mismatch, config.train.max_retention_drift)
        assert _start_or_resume(config, run.run_dir, run.run_dir / "checkpoints", resumed, verifier, monitor)["step"] == 2
        assert greedy_tokens(resumed.policy, prompts) == run.greedy
        # Step 3 from the checkpoint and step 3 in memory: the same completions, the same update.
        examples = load_examples(config, "train")[4:6]
        for learner in (run.learner, resumed):
            sampler = build_sampler(config, learner.full_model, real_tokenizer)
            grpo_step(config, 3, examples, real_tokenizer, sampler, verifier, learner)
    for (name, continued), (_, restored) in zip(checkpoint_weights(run.learner.policy), checkpoint_weights(resumed.policy)):
        torch.testing.assert_close(restored, continued, rtol=0, atol=1e-6, msg=name)
