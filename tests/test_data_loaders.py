"""Dataset loaders: JSONL with configurable fields, GSM8K, prompt formatting, one-line errors on bad rows."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import GRPO, GSM8K_DIR, REPO
from grpo_cli.compose import compose
from grpo_cli.config import DataConfig
from grpo_cli.data import Example
from grpo_cli.data.loaders import encode_prompt, format_prompt, load_examples
from grpo_cli.errors import GrpoError
from grpo_cli.models import build_tokenizer


def write_rows(path, rows: list[str]) -> str:
    path.write_text("".join(row + "\n" for row in rows))
    return str(path)


def jsonl_config(train_path: str, eval_path: str = "", *extra: str):
    return compose(["data=jsonl", f"data.train_path={train_path}", f"data.eval_path={eval_path or train_path}", *extra])


def test_jsonl_with_custom_fields(tmp_path):
    path = write_rows(tmp_path / "rows.jsonl", [
        json.dumps({"id": "a", "problem": "What is 6 x 7?", "target": 42, "worked": "6 * 7 = 42\nFINAL: 42"}),
        "",
        json.dumps({"problem": "Half of 9?", "target": "4.5"}),
    ])
    config = jsonl_config(path, path, "data.prompt_field=problem", "data.answer_field=target", "data.solution_field=worked",
                          f"data.select_path={path}")
    assert load_examples(config, "train") == [
        Example("a", "What is 6 x 7?", "42", "6 * 7 = 42\nFINAL: 42"),
        Example("rows-3", "Half of 9?", "4.5", ""),
    ]


def test_gsm8k_answer_after_hashes_and_whole_solution():
    config = compose(["recipe=gsm8k"])
    assert config.data.train_path == "../shared/data/gsm8k/train.jsonl"
    config.data.eval_path = str(GSM8K_DIR / "test.jsonl")
    examples = load_examples(config, "eval")
    assert len(examples) == 1319
    first = examples[0]
    assert first.question.startswith("Janet’s ducks lay 16 eggs per day.")
    assert first.answer == "18"
    assert first.solution.endswith("#### 18") and "16 - 3 - 4 = <<16-3-4=9>>9" in first.solution


def test_gsm8k_relative_path_resolves_from_the_current_directory(monkeypatch):
    monkeypatch.chdir(REPO)
    # 7,473 rows: the last data.num_select = 200 are the select split, not trained on.
    config = compose(["recipe=gsm8k"])
    train, select = load_examples(config, "train"), load_examples(config, "select")
    assert (len(train), len(select)) == (7273, 200)
    assert select[-1].id == "train-7473" and train[-1].id == "train-7273"


def test_select_split_is_a_file_or_the_end_of_the_train_file(tmp_path):
    rows = [json.dumps({"question": f"Q{i}", "answer": str(i)}) for i in range(1, 6)]
    train_path, select_path = write_rows(tmp_path / "train.jsonl", rows), write_rows(tmp_path / "sel.jsonl", rows[:1])
    carved = jsonl_config(train_path, train_path, "data.num_select=2")
    assert [ex.answer for ex in load_examples(carved, "train")] == ["1", "2", "3"]
    assert [ex.answer for ex in load_examples(carved, "select")] == ["4", "5"]
    from_file = jsonl_config(train_path, train_path, f"data.select_path={select_path}")
    assert [ex.answer for ex in load_examples(from_file, "train")] == ["1", "2", "3", "4", "5"]
    assert [ex.answer for ex in load_examples(from_file, "select")] == ["1"]
    with pytest.raises(GrpoError, match=r"data.num_select=5: .* has only 5 rows; set data.select_path=FILE"):
        load_examples(jsonl_config(train_path, train_path, "data.num_select=5"), "train")


def test_harbor_split_from_config():
    config = compose(["data.num_train=30", "data.num_eval=5", "data.difficulty=[1]"])
    train, evaluation = load_examples(config, "train"), load_examples(config, "eval")
    assert (len(train), len(evaluation)) == (30, 5)
    assert evaluation[0].id == "harbor-eval-00000" and evaluation[0].solution.endswith(f"FINAL: {evaluation[0].answer}")


BAD_ROWS = [
    ('{"question": "Q1", "answer": "1"}\n{"question": "Q2"}\n', "rows.jsonl:2: missing field 'answer'"),
    ('{"question": "Q1", "answer": "1"}\n{"question": "  ", "answer": "3"}\n', "rows.jsonl:2: field 'question' is empty"),
    (b'{"question": "Q1", "answer": "1"}\n{"question": "caf\xe9", "answer": "2"}\n', "rows.jsonl:2: not UTF-8"),
    ('{"question": "Q1", "answer": "1"}\n{"question": "Q2", "answer": 2\n', "rows.jsonl:2: not valid JSON"),
    ('["Q1", "1"]\n', "rows.jsonl:1: expected a JSON object"),
]


@pytest.mark.parametrize("content,message", BAD_ROWS, ids=["missing-answer", "empty-prompt", "non-utf8", "bad-json", "not-object"])
def test_bad_rows_name_file_line_and_field(tmp_path, content, message):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(GrpoError, match=message):
        load_examples(jsonl_config(str(path)), "train")


def test_gsm8k_row_without_hashes(tmp_path):
    path = write_rows(tmp_path / "g.jsonl", [json.dumps({"question": "Q", "answer": "it is 4"})])
    config = compose(["data=gsm8k", f"data.train_path={path}"])
    with pytest.raises(GrpoError, match=r"g.jsonl:1: field 'answer' has no '#### <answer>' line"):
        load_examples(config, "train")


def test_missing_file_and_unset_path(tmp_path):
    with pytest.raises(GrpoError, match=r"data.train_path=.*nope.jsonl: no such file"):
        load_examples(jsonl_config(str(tmp_path / "nope.jsonl")), "train")
    with pytest.raises(GrpoError, match=r"data.eval_path is not set"):
        load_examples(compose(["data=jsonl", f"data.train_path={tmp_path}"]), "eval")


def test_bad_row_is_one_line_error_from_the_cli(tmp_path):
    path = write_rows(tmp_path / "rows.jsonl", ['{"question": "Q1", "answer": "1"}', '{"question": "Q2", "solution": "x"}'])
    result = subprocess.run(
        [GRPO, "sft", "data=jsonl", f"data.train_path={path}", f"data.eval_path={path}"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr == f"error: {path}:2: missing field 'answer' (data.answer_field=answer; the row has 'question', 'solution')\n"


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = build_tokenizer(["Bay A has 12 crates.\n12 + 3 = 15\nFINAL: 15"] * 10, vocab_size=300, max_length=64)
    tokenizer.chat_template = "{% for m in messages %}<s>[{{ m['role'] }}] {{ m['content'] }}{% endfor %}[assistant] "
    return tokenizer


def test_format_prompt_template_and_chat_template(tokenizer):
    example = Example("1", "How many {crates}?", "3")
    plain = DataConfig(prompt_template="Q: {prompt}\nA:")
    assert format_prompt(example, tokenizer, plain) == "Q: How many {crates}?\nA:"
    chat = DataConfig(prompt_template="{prompt}\nShow your work.", use_chat_template=True)
    assert format_prompt(example, tokenizer, chat) == "<s>[user] How many {crates}?\nShow your work.[assistant] "


def test_encode_prompt_adds_bos_once(tokenizer):
    example = Example("1", "Bay A has 12 crates.", "12")
    plain = encode_prompt(example, tokenizer, DataConfig())
    chat = encode_prompt(example, tokenizer, DataConfig(use_chat_template=True))
    assert plain[0] == tokenizer.bos_token_id and plain.count(tokenizer.bos_token_id) == 1
    assert chat[0] == tokenizer.bos_token_id and chat.count(tokenizer.bos_token_id) == 1


def test_tiny_tokenizer_chat_template_is_bos_then_the_message():
    tiny = build_tokenizer(["Bay A has 12 crates.\n12 + 3 = 15\nFINAL: 15"] * 10, vocab_size=300, max_length=64)
    ids = encode_prompt(Example("1", "Bay A has 12 crates.", "12"), tiny, DataConfig(use_chat_template=True))
    assert ids[0] == tiny.bos_token_id and ids.count(tiny.bos_token_id) == 1
    assert tiny.decode(ids, skip_special_tokens=True) == "Bay A has 12 crates.\n\n"


def test_chat_template_missing_is_an_error(tokenizer):
    tokenizer = build_tokenizer(["Bay A has 12 crates."], vocab_size=300, max_length=64)
    tokenizer.chat_template = None
    with pytest.raises(GrpoError, match="has no chat template; set data.use_chat_template=false"):
        format_prompt(Example("1", "Q", "1"), tokenizer, DataConfig(use_chat_template=True))


def test_prompt_template_must_place_the_question():
    result = subprocess.run([GRPO, "config", "data.prompt_template=Solve:"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == "error: data.prompt_template='Solve:': must contain {prompt}, where the question goes\n"
