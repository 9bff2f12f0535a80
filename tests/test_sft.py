"""SFT: masking by hand, the LR schedule, real loss reduction on a tiny Llama, the command end to end."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import torch

from conftest import GRPO
from grpo_cli.compose import compose
from grpo_cli.config import TinyModelConfig
from grpo_cli.data.loaders import load_examples
from grpo_cli.environment.tool_calls import TAGGED_OUTPUT
from grpo_cli.models import build_tiny_model, build_tokenizer
from grpo_cli.training.sft import IGNORE, collate, encode_solution, tokenize, train


def test_collate_masks_prompt_tool_outputs_and_padding():
    batch = collate([([1, 10, 11], [20, 2], [20, 2]), ([1, 12], [21, 22, 23, 2], [21, IGNORE, 23, 2])], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 10, 11, 20, 2, 0], [1, 12, 21, 22, 23, 2]]
    assert batch["labels"].tolist() == [[IGNORE, IGNORE, IGNORE, 20, 2, IGNORE], [IGNORE, IGNORE, 21, IGNORE, 23, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]


def test_tool_outputs_are_out_of_the_loss():
    """Each tool output (with the newlines the environment writes around it) is tokenized on its own and
    labelled IGNORE; the calls, the text after them and EOS are trained, in a solution with two calls."""
    solution = "<calculator>34 - 28</calculator>\n<output>6</output>\nthen <calculator>6 + 1</calculator>\n<output>7</output>\nFINAL: 7"
    tokenizer = build_tokenizer([f"Bay A has 34 crates.\n{solution}"] * 5, vocab_size=320, max_length=128)
    ids, labels = encode_solution(solution, tokenizer)
    assert len(ids) == len(labels) and ids[-1] == labels[-1] == tokenizer.eos_token_id
    masked = [token for token, label in zip(ids, labels) if label == IGNORE]
    trained = [token for token, label in zip(ids, labels) if label != IGNORE]
    assert tokenizer.decode(masked) == "\n<output>6</output>\n\n<output>7</output>\n"
    assert tokenizer.decode(trained, skip_special_tokens=True) == (
        "<calculator>34 - 28</calculator>then <calculator>6 + 1</calculator>FINAL: 7"
    )
    # The pieces are those a rollout puts together: the model's turn, then the environment's text on its own.
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    first_turn = encode("<calculator>34 - 28</calculator>") + encode(TAGGED_OUTPUT.format(6))
    assert ids[: len(first_turn)] == first_turn
    # A solution without tool calls is trained on every token, as before.
    plain, plain_labels = encode_solution("34 - 28 = 6\nFINAL: 6", tokenizer)
    assert plain == plain_labels == encode("34 - 28 = 6\nFINAL: 6") + [tokenizer.eos_token_id]


def test_a_chat_row_trains_on_its_assistant_turn_after_the_rendered_prompt(tmp_path):
    """A conversational row that ends in the assistant's turn: the prompt is the chat template's rendering of
    the turns before it (generation prompt added, as the sampler sees it), the target that turn's text + EOS."""
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Bay A has 12 crates. 3 more?"},
        {"role": "assistant", "content": "12 + 3 = 15\nFINAL: 15"},
    ], "answer": "15"}) + "\n")
    config = compose(["data=hf", f"data.eval_path={tmp_path / 'chat.jsonl'}", "data.prompt_field=messages"])
    [example] = load_examples(config, "eval")
    tokenizer = build_tokenizer(["Be brief.\nBay A has 12 crates. 3 more?\n12 + 3 = 15\nFINAL: 15"] * 5, vocab_size=300, max_length=128)
    [(prompt, solution, labels)] = tokenize([example], tokenizer, config, 128)
    # The tiny chat template: BOS, then each message's content on its own line.
    assert tokenizer.decode(prompt) == "<s>Be brief.\nBay A has 12 crates. 3 more?\n"
    assert solution == labels == tokenizer("12 + 3 = 15\nFINAL: 15", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def test_loss_ignores_tool_output_tokens():
    """Changing the tokens inside an <output> span changes the inputs after it but not which positions
    count: the loss is the mean NLL over the model-written tokens only (5 of the 8 solution tokens)."""
    tokenizer = build_tokenizer(["Bay A has 12 crates.\n12 + 3 = 15\nFINAL: 15"] * 5, vocab_size=300, max_length=64)
    model = build_tiny_model(TinyModelConfig(hidden_size=64, num_heads=1, num_layers=1, intermediate_size=64), tokenizer, seed=0)
    solution = [50, 51, 60, 61, 62, 52, 53, 2]
    labels = [50, 51, IGNORE, IGNORE, IGNORE, 52, 53, 2]
    batch = collate([([1, 40], solution, labels)], pad_id=0)
    logprobs = torch.log_softmax(model(input_ids=batch["input_ids"]).logits, -1)
    # Position t predicts token t + 1: the solution starts at position 2.
    picked = [logprobs[0, 2 + i - 1, token] for i, token in enumerate(solution) if labels[i] != IGNORE]
    assert len(picked) == 5
    assert model(**batch).loss.item() == pytest.approx(-torch.stack(picked).mean().item(), rel=1e-5)


def test_loss_ignores_prompt_tokens():
    """The HF loss with our labels equals the mean NLL over the solution positions, computed by hand."""
    tokenizer = build_tokenizer(["Bay A has 12 crates.\n12 + 3 = 15\nFINAL: 15"] * 5, vocab_size=300, max_length=64)
    model = build_tiny_model(TinyModelConfig(hidden_size=64, num_heads=1, num_layers=1, intermediate_size=64), tokenizer, seed=0)
    batch = collate([([1, 40, 41, 42], [50, 51, 2], [50, 51, 2]), ([1, 43], [52, 2], [52, 2])], pad_id=0)
    logprobs = torch.log_softmax(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
    # Position t predicts token t + 1: solution tokens sit at 4, 5, 6 in row 0 and 2, 3 in row 1.
    picked = [logprobs[0, 3, 50], logprobs[0, 4, 51], logprobs[0, 5, 2], logprobs[1, 1, 52], logprobs[1, 2, 2]]
    expected = -torch.stack(picked).mean()
    assert model(**batch).loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_few_steps_reduce_the_loss():
    config = compose(["recipe=demo", "data.num_train=64", "data.num_eval=1", "sft.steps=40", "sft.batch_size=16",
                      "sft.lr=3e-3", "sft.warmup_steps=4"])
    examples = load_examples(config, "train")
    tokenizer = build_tokenizer((f"{ex.question}\n{ex.solution}" for ex in examples), vocab_size=400, max_length=128)
    model = build_tiny_model(TinyModelConfig(hidden_size=64, num_heads=1, num_layers=2, intermediate_size=128), tokenizer, seed=0)
    before = list(model.parameters())[0].detach().clone()
    losses = train(model, tokenize(examples, tokenizer, config, 128), tokenizer.pad_token_id, config)
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert not torch.equal(before, list(model.parameters())[0])


def test_sft_command_saves_a_model_and_reports_pass_at_k(tmp_path):
    common = ["recipe=demo", f"sft.init_from={tmp_path / 'init'}", "data.num_train=200", "data.num_eval=8"]
    subprocess.run([GRPO, "init-model", *common, "model.tiny.num_layers=1"], check=True, capture_output=True)
    result = subprocess.run(
        [GRPO, "sft", *common, f"sft.output_dir={tmp_path / 'sft'}", "sft.steps=6", "sft.batch_size=8", "sft.log_every=3",
         "eval.num_prompts=8", "eval.pass_at=[1,2]"],
        check=True, capture_output=True, text=True,
    )
    lines = result.stdout.splitlines()
    assert [line.split("  ")[0] for line in lines if line.startswith("sft step")] == ["sft step 3/6", "sft step 6/6"]
    assert any(line.startswith(f"sft done in ") for line in lines)
    table = result.stdout.split("sft done in ", 1)[1]
    assert "pass@1" in table and "pass@2" in table and "8 x 2" in table
    results = json.loads((tmp_path / "sft" / "eval.json").read_text())
    assert results["num_prompts"] == 8 and results["num_samples"] == 2 and results["sft_steps"] == 6
    assert 0 <= results["pass@1"] <= results["pass@2"] <= 1
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "sft").config.num_hidden_layers == 1


@pytest.mark.slow
def test_demo_sft_calibration(tmp_path):
    """init-model then SFT on the demo recipe: pass@1 between 10% and 70% (the time is printed, not asserted:
    timings belong in benchmarks on a shared machine)."""
    paths = [f"sft.init_from={tmp_path / 'init'}", f"sft.output_dir={tmp_path / 'sft'}"]
    started = time.monotonic()
    subprocess.run([GRPO, "init-model", "recipe=demo", *paths], check=True)
    subprocess.run([GRPO, "sft", "recipe=demo", *paths], check=True)
    seconds = time.monotonic() - started
    results = json.loads((tmp_path / "sft" / "eval.json").read_text())
    print(f"init-model + sft: {seconds:.0f}s, pass@1 {results['pass@1']:.3f}, pass@12 {results['pass@12']:.3f}")
    assert results["num_prompts"] >= 200 and results["temperature"] == 1.0
    assert 0.10 <= results["pass@1"] <= 0.70
