"""`evaluate` and `grpo eval`: real verifier, real tiny models, pass@k figures checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from grpo_cli.cli import main
from grpo_cli.config import Config, TinyModelConfig
from grpo_cli.data import Example
from grpo_cli.data.prompts import encode_prompt
from grpo_cli.models import build_tiny_model, build_tokenizer, load_model, load_tokenizer
from grpo_cli.sampler.base import Completion
from grpo_cli.training.evaluate import evaluate
from grpo_cli.verifier import build_verifier

TINY = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=1, intermediate_size=128, vocab_size=300, max_position_embeddings=128)
QUESTIONS = {  # question -> the answer the tiny model is trained to give
    "The harbor holds 12 crates and ships 5. How many remain?": "7",
    "A dock has 3 boxes and gets 4 more. How many now?": "7",
    "Each of 3 pallets holds 3 sacks. How many sacks?": "9",
}
METRICS = {
    "num_prompts", "num_samples", "temperature", "reward/mean", "reward/std", "reward/correct_mean", "completions/len_mean",
    "completions/len_max", "completions/truncated_frac", "verifier/parse_failures", "verifier/timeouts", "verifier/errors",
}


class ScriptedSampler:
    """Returns fixed completions (one list per prompt) and records what it was asked for."""

    def __init__(self, groups: list[list[Completion]]):
        self.groups = groups
        self.calls: list[dict] = []

    def generate(self, prompt_ids, n, seed, temperature=None, stop=(), on_groups=None):
        self.calls.append({"prompt_ids": prompt_ids, "n": n, "seed": seed, "temperature": temperature})
        return self.groups[: len(prompt_ids)]

    def sync_weights(self, model) -> None:
        pass


def completion(text: str, length: int, finish_reason: str = "stop") -> Completion:
    return Completion(token_ids=[5] * length, logprobs=[-1.0] * length, text=text, finish_reason=finish_reason)


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"{q}\nFINAL: {a}" for q, a in QUESTIONS.items()]
    return build_tokenizer(texts * 20, vocab_size=TINY.vocab_size, max_length=TINY.max_position_embeddings)


def test_pass_at_k_and_rates_from_known_completions(tokenizer):
    examples = [Example("a", "12 - 5?", "7"), Example("b", "3 x 4?", "12"), Example("c", "never asked", "1")]
    groups = [
        # 2 of 4 correct, one without an answer line, one truncated
        [completion("12 - 5 = 7\nFINAL: 7", 1), completion("FINAL: 8", 2), completion("FINAL: 7", 3),
         completion("twelve minus", 4, "length")],
        # 1 of 4 correct, one without an answer line, two truncated
        [completion("FINAL: 12", 5), completion("FINAL: 13", 6, "length"), completion("FINAL: 11", 7),
         completion("3 x 4 is", 8, "length")],
    ]
    config = Config.from_dict({
        "verifier": {"extract": "final_line"},
        "sampler": {"temperature": 1.0},
        "eval": {"pass_at": [1, 2, 4], "num_samples": 4, "num_prompts": 2, "temperature": 0.3},
    })
    sampler = ScriptedSampler(groups)
    with build_verifier(config.verifier) as verifier:
        results = evaluate(sampler, tokenizer, examples, verifier, config, seed=11)

    (call,) = sampler.calls
    assert call["n"] == 4 and call["seed"] == 11 and call["temperature"] == 0.3
    assert call["prompt_ids"] == [encode_prompt(ex, tokenizer, config.data) for ex in examples[:2]]
    # pass@k = 1 - C(n-c, k) / C(n, k), n = 4, c = 2 and 1, averaged over the two prompts:
    assert results["pass@1"] == pytest.approx((2 / 4 + 1 / 4) / 2)  # 0.375
    assert results["pass@2"] == pytest.approx(((1 - 1 / 6) + (1 - 3 / 6)) / 2)  # 2/3
    assert results["pass@4"] == pytest.approx(1.0)
    assert results["num_prompts"] == 2 and results["num_samples"] == 4 and results["temperature"] == 0.3
    assert results["reward/mean"] == pytest.approx(3 / 8) and results["reward/correct_mean"] == pytest.approx(3 / 8)
    assert results["verifier/parse_failures"] == 2 and results["verifier/timeouts"] == 0
    assert results["completions/len_mean"] == pytest.approx(4.5) and results["completions/len_max"] == 8
    assert results["completions/truncated_frac"] == pytest.approx(3 / 8)
    assert set(results) == {"pass@1", "pass@2", "pass@4"} | METRICS


def train_tiny_model(tokenizer, steps: int) -> torch.nn.Module:
    """A tiny Llama taught each question's `FINAL: <answer>` line, enough to be right only some of the time."""
    model = build_tiny_model(TINY, tokenizer, seed=0)
    rows = [
        tokenizer(f"{q}\n")["input_ids"] + tokenizer(f"FINAL: {a}", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        for q, a in QUESTIONS.items()
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(steps):
        loss = sum(model(torch.tensor([row]), labels=torch.tensor([row])).loss for row in rows) / len(rows)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


@pytest.fixture(scope="module")
def model_dir(tokenizer, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-model")
    train_tiny_model(tokenizer, steps=40).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "eval.jsonl"
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS.items()))
    return path


def eval_args(model: Path, eval_file: Path, *overrides: str, pass_at: str = "1,6") -> list[str]:
    return [
        "eval", "--pass-at", pass_at, "data=jsonl", f"data.eval_path={eval_file}", f"model.name_or_path={model}",
        "verifier.extract=final_line", "sampler.max_new_tokens=10", *overrides,
    ]


def test_grpo_eval_writes_the_same_figures_twice(model_dir, eval_file, tmp_path, capsys):
    main(eval_args(model_dir, eval_file, f"eval.output={tmp_path / 'first.json'}"))
    table = capsys.readouterr().out
    main(eval_args(model_dir, eval_file, f"eval.output={tmp_path / 'second.json'}"))

    first = json.loads((tmp_path / "first.json").read_text())
    second = json.loads((tmp_path / "second.json").read_text())
    assert first == second
    assert set(first) == {"pass@1", "pass@6", "model"} | METRICS
    assert first["num_prompts"] == 3 and first["num_samples"] == 6
    # The partly trained model is sometimes right: pass@1 is strictly between 0 and pass@6.
    assert 0 < first["pass@1"] < first["pass@6"]
    assert "pass@1" in table and "pass@6" in table and str(tmp_path / "first.json") in table


def test_eval_json_defaults_to_the_run_directory(model_dir, eval_file, tmp_path, capsys):
    main(eval_args(model_dir, eval_file, f"train.output_dir={tmp_path / 'run'}", "eval.num_samples=2", pass_at="1"))
    results = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert results["num_samples"] == 2 and "pass@1" in results
    # Not a terminal: the progress of sampling, then verifying, as plain lines.
    progress = [line.split(",")[0] for line in capsys.readouterr().err.splitlines() if line.startswith("eval: ")]
    assert progress == ["eval: 1/2 (50%)", "eval: 2/2 (100%)"]


def test_lora_checkpoint_loads_base_plus_adapter(model_dir, tokenizer, tmp_path):
    base = load_model(Config.from_dict({"model": {"name_or_path": str(model_dir)}}).model)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    torch.manual_seed(1)
    policy = get_peft_model(base, lora)
    checkpoint = tmp_path / "step_000010"
    policy.save_pretrained(checkpoint)  # adapter_config.json names the base directory
    tokenizer.save_pretrained(checkpoint)

    config = Config.from_dict({"model": {"name_or_path": str(checkpoint)}})
    loaded, loaded_tokenizer = load_model(config.model), load_tokenizer(config.model.name_or_path)
    ids = torch.tensor([tokenizer("The harbor holds 12 crates")["input_ids"]])
    with torch.no_grad():
        expected = policy(ids).logits
        with policy.disable_adapter():
            base_logits = policy(ids).logits
        got = loaded(ids).logits
    assert (expected - base_logits).abs().max() > 1e-3  # the adapter changes the model
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert loaded_tokenizer.eos_token_id == tokenizer.eos_token_id


def test_nonexistent_model_path_is_a_one_line_error(eval_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(eval_args(tmp_path / "no-such-model", eval_file))
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.count("\n") == 1 and err.startswith("error:") and str(tmp_path / "no-such-model") in err
