"""The harbor_tools recipe trains with each sampler: multi-turn rollouts that call the calculator, the
calculator's tokens out of the loss, reward rising over a few steps.

A tiny Llama (head_dim 64, so vLLM serves it) is SFT-trained here for a few hundred steps on Harbor level-1
solutions that all call the calculator (data.tool_solutions=1): at temperature 1 it then calls the tool and
copies the numbers in and the answer out right about 95% of the time. Sampled at temperature 1.5 it slips
far more often, which leaves GRPO room to show the reward rising within a few steps (a favourable setting:
`make demo-tools` shows the calibrated one, where GRPO teaches a model to choose the calculator).
"""

from __future__ import annotations

import json
import re

import pytest

from grpo_cli.compose import compose
from grpo_cli.data.loaders import load_examples
from grpo_cli.models import build_tiny_model, build_tokenizer
from grpo_cli.training.learner import Learner
from grpo_cli.training.sft import tokenize
from grpo_cli.training.sft import train as sft_train
from grpo_cli.training.trainer import train

pytestmark = pytest.mark.slow

DATA = ["recipe=harbor_tools", "data.num_train=4000", "data.num_eval=40", "data.num_select=20", "data.tool_solutions=1.0"]
SFT = [*DATA, "sft.steps=300", "sft.batch_size=32", "sft.lr=3e-3", "sft.warmup_steps=20"]
GRPO = [*DATA, "train.max_steps=8", "train.prompts_per_step=16", "train.micro_batch_tokens=8192", "optimizer.lr=3e-4",
        "sampler.temperature=1.5", "eval.num_prompts=8", "eval.pass_at=[1]"]
OBSERVATIONS = re.compile(r"(\n<output>[^\n]*</output>\n)*")  # TAGGED_OUTPUT, any number of them


@pytest.fixture(scope="module")
def tool_model(tmp_path_factory):
    """A 2-layer tiny Llama after SFT on solutions that call the calculator."""
    config = compose(SFT)
    examples = load_examples(config, "train")
    tokenizer = build_tokenizer((f"{ex.question}\n{ex.solution}" for ex in examples), vocab_size=400, max_length=256)
    tiny = config.model.tiny
    shape = type(tiny)(hidden_size=128, num_heads=2, num_layers=2, intermediate_size=256, vocab_size=400, max_position_embeddings=256)
    model = build_tiny_model(shape, tokenizer, seed=0)
    sft_train(model, tokenize(examples, tokenizer, config, 256), tokenizer.pad_token_id, config)
    path = tmp_path_factory.mktemp("tools") / "sft"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run_steps(tool_model, out, sampler: str, monkeypatch) -> tuple[list[dict], list]:
    """GRPO steps of harbor_tools from the tool model; the metrics of each step and every learner batch."""
    batches = []
    train_on = Learner.train_on

    def recording(self, batch):
        batches.append(batch)
        return train_on(self, batch)

    monkeypatch.setattr(Learner, "train_on", recording)
    overrides = [*GRPO, f"model.name_or_path={tool_model}", f"train.output_dir={out}", f"sampler={sampler}"]
    if sampler == "vllm":
        overrides.append("sampler.kv_cache_gb=1")
    train(compose(overrides))
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return metrics, batches


def check_rollouts(metrics: list[dict], batches: list, tokenizer, out) -> None:
    # Several turns: rollouts call the calculator and read its answer before the final line.
    assert all(m["env/tool_calls_mean"] > 0.5 and m["env/turns_mean"] > 1.5 for m in metrics), metrics
    # Environment tokens are in the sequences but out of completion_mask, so out of the loss: per row, the
    # tokens outside the mask are the calculator's answers (results or errors), nothing else.
    checked = 0
    for batch in batches:
        P = batch.input_ids.shape[1] - batch.completion_mask.shape[1]
        for ids, attended, mask in zip(batch.input_ids[:, P:], batch.attention_mask[:, P:], batch.completion_mask):
            env = tokenizer.decode(ids[attended.bool() & ~mask])
            assert OBSERVATIONS.fullmatch(env), env
            checked += bool(env)
    assert checked > 0.5 * sum(batch.input_ids.shape[0] for batch in batches)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert any(record["role"] == "tool" and record["tool"] == "calculator" for group in samples
               for transcript in group["transcripts"] for record in transcript)
    # Reward rises: the last three steps beat the first three.
    rewards = [m["reward/mean"] for m in metrics]
    assert sum(rewards[-3:]) > sum(rewards[:3]), rewards


def test_harbor_tools_trains_with_the_hf_sampler(tool_model, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    metrics, batches = run_steps(tool_model, tmp_path, "hf", monkeypatch)
    print("hf rewards", [round(m["reward/mean"], 3) for m in metrics], "tool calls", [m["env/tool_calls_mean"] for m in metrics])
    check_rollouts(metrics, batches, AutoTokenizer.from_pretrained(tool_model), tmp_path)


@pytest.mark.vllm
def test_harbor_tools_trains_with_the_vllm_sampler(tool_model, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    metrics, batches = run_steps(tool_model, tmp_path, "vllm", monkeypatch)
    print("vllm rewards", [round(m["reward/mean"], 3) for m in metrics], "tool calls", [m["env/tool_calls_mean"] for m in metrics])
    check_rollouts(metrics, batches, AutoTokenizer.from_pretrained(tool_model), tmp_path)
