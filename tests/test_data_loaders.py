"""Dataset loading through the datasets library: every file format, save_to_disk folders, Hub splits (a local
folder laid out like a Hub dataset; offline, one line), chat prompts, GSM8K, one-line errors on bad rows."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import huggingface_hub
import pytest

from conftest import GRPO, REPO
from grpo_cli.compose import compose
from grpo_cli.config import DataConfig
from grpo_cli.data import Example
from grpo_cli.data.loaders import load_examples
from grpo_cli.data.prompts import encode_prompt, format_prompt
from grpo_cli.errors import GrpoError
from grpo_cli.models import build_tokenizer

ROWS = [
    {"id": "a", "question": "What is 6 x 7?", "answer": "42", "solution": "6 * 7 = 42\nFINAL: 42", "level": 2},
    {"id": "b", "question": "Half of 9?", "answer": "4.5", "solution": "9 / 2 = 4.5\nFINAL: 4.5", "level": 1},
    {"id": "c", "question": "Three fives?", "answer": "15", "solution": "5 * 3 = 15\nFINAL: 15", "level": 1},
]
EXPECTED = [
    Example(row["id"], row["question"], row["answer"], row["solution"], columns={k: v for k, v in row.items() if k != "question"})
    for row in ROWS
]


def write_rows(path, rows: list[str]) -> str:
    path.write_text("".join(row + "\n" for row in rows))
    return str(path)


def jsonl_config(train_path: str, eval_path: str = "", *extra: str):
    return compose(["data=jsonl", f"data.train_path={train_path}", f"data.eval_path={eval_path or train_path}", *extra])


def test_jsonl_with_custom_fields_keeps_every_other_column(tmp_path):
    # 42 and 4.5 make a float column (Arrow): the answer still reads "42".
    path = write_rows(tmp_path / "rows.jsonl", [
        json.dumps({"id": "a", "problem": "What is 6 x 7?", "target": 42, "worked": "6 * 7 = 42\nFINAL: 42", "tags": ["x"]}),
        "",
        json.dumps({"problem": "Half of 9?", "target": 4.5}),
    ])
    config = jsonl_config(path, path, "data.prompt_field=problem", "data.answer_field=target", "data.solution_field=worked",
                          f"data.select_path={path}")
    assert load_examples(config, "train") == [
        Example("a", "What is 6 x 7?", "42", "6 * 7 = 42\nFINAL: 42",
                columns={"id": "a", "target": 42.0, "worked": "6 * 7 = 42\nFINAL: 42", "tags": ["x"]}),
        Example("rows-2", "Half of 9?", "4.5", "", columns={"id": None, "target": 4.5, "worked": None, "tags": None}),
    ]


def test_a_column_of_text_and_numbers_is_refused_before_its_values_change(tmp_path):
    path = write_rows(tmp_path / "rows.jsonl", [json.dumps({"question": "Q1", "answer": "007"}), json.dumps({"question": "Q2", "answer": 2})])
    with pytest.raises(GrpoError, match=r"rows.jsonl: column 'answer' holds text in some rows and numbers or lists in others"):
        load_examples(jsonl_config(path, path, f"data.select_path={path}"), "train")


def write_every_format(tmp_path) -> dict[str, str]:
    """ROWS as each format the loader reads: {name: path}."""
    import datasets

    dataset = datasets.Dataset.from_list(ROWS)
    paths = {name: tmp_path / f"rows.{name}" for name in ("parquet", "csv", "jsonl")}
    dataset.to_parquet(str(paths["parquet"]))
    dataset.to_csv(str(paths["csv"]), index=False)
    write_rows(paths["jsonl"], [json.dumps(row) for row in ROWS])
    (tmp_path / "rows.json").write_text(json.dumps(ROWS))  # one JSON array
    paths["json"] = tmp_path / "rows.json"
    dataset.save_to_disk(str(tmp_path / "saved"))
    paths["save_to_disk"] = tmp_path / "saved"
    paths["arrow"] = next((tmp_path / "saved").glob("*.arrow"))
    datasets.DatasetDict({"train": dataset, "test": dataset.select([0])}).save_to_disk(str(tmp_path / "saved_dict"))
    paths["save_to_disk DatasetDict"] = tmp_path / "saved_dict"
    (tmp_path / "shards").mkdir()
    dataset.select([0, 1]).to_parquet(str(tmp_path / "shards" / "part-0.parquet"))
    dataset.select([2]).to_parquet(str(tmp_path / "shards" / "part-1.parquet"))
    paths["folder of parquet shards"] = tmp_path / "shards"
    return {name: str(path) for name, path in paths.items()}


def test_every_format_reads_the_same_rows(tmp_path):
    for name, path in write_every_format(tmp_path).items():
        config = compose(["data=hf", f"data.train_path={path}", f"data.select_path={path}"])
        examples = load_examples(config, "train")
        if name == "csv":  # untyped: pandas reads the answers 42, 4.5, 15 as a float column
            assert [e.columns["answer"] for e in examples] == [42.0, 4.5, 15.0]
            examples = [dataclasses.replace(e, columns=x.columns) for e, x in zip(examples, EXPECTED)]
        assert examples == EXPECTED, name
    saved_dict = compose(["data=hf", f"data.eval_path={tmp_path / 'saved_dict'}"])
    assert load_examples(saved_dict, "eval") == EXPECTED[:1]  # data.eval_split=test of the DatasetDict


def test_hub_splits_from_a_folder_laid_out_like_a_hub_dataset(tmp_path):
    write_rows(tmp_path / "train.jsonl", [json.dumps(row) for row in ROWS])
    write_rows(tmp_path / "test.jsonl", [json.dumps(ROWS[2])])
    config = compose(["data=hf", f"data.hf_path={tmp_path}", "data.num_select=1"])
    assert [ex.id for ex in load_examples(config, "train")] == ["a", "b"]
    assert [ex.id for ex in load_examples(config, "select")] == ["c"]  # carved off the train split
    assert [ex.id for ex in load_examples(config, "eval")] == ["c"]
    own_select = compose(["data=hf", f"data.hf_path={tmp_path}", "data.select_split=test"])
    assert [ex.id for ex in load_examples(own_select, "train")] == ["a", "b", "c"]
    with pytest.raises(GrpoError, match=r"data.hf_path=.* \(data.hf_name='', data.eval_split=validation\): Unknown split \"validation\""):
        load_examples(compose(["data=hf", f"data.hf_path={tmp_path}", "data.eval_split=validation"]), "eval")


def test_a_hub_dataset_offline_is_one_line_that_says_what_to_do(monkeypatch):
    config = compose(["recipe=gsm8k"])
    assert (config.data.hf_path, config.data.hf_name, config.data.train_path) == ("openai/gsm8k", "main", "")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(GrpoError, match=r"^data.hf_path=openai/gsm8k is a Hub dataset, but this machine is offline "
                                        r"\(HF_HUB_OFFLINE is set\); point data.train_path and data.eval_path at local copies"):
        load_examples(config, "train")
    # No route to the Hub fails at once as well (a refused connection here, DNS or the probe's timeout elsewhere).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(GrpoError, match=r"offline \(http://127.0.0.1:9 cannot be reached: .*\); point data.train_path"):
        load_examples(config, "eval")


def test_gsm8k_answer_after_hashes_and_whole_solution(gsm8k):
    examples = load_examples(compose(["recipe=gsm8k", *gsm8k]), "eval")
    assert len(examples) == 1319
    first, last = examples[0], examples[-1]
    assert (first.id, last.id, first.answer, last.answer) == ("test-1", "test-1319", "18", "14")
    assert first.question.startswith("Janet’s ducks lay 16 eggs per day.")
    assert first.solution.endswith("#### 18") and "16 - 3 - 4 = <<16-3-4=9>>9" in first.solution
    assert first.columns == {"answer": first.solution}


def test_gsm8k_train_and_select_rows_from_relative_paths(gsm8k, monkeypatch):
    """The rows the line-by-line JSONL reader gave before the datasets library read them (same ids, questions,
    answers and solutions); relative paths start at the current directory."""
    monkeypatch.chdir(REPO)
    config = compose(["recipe=gsm8k", "data.train_path=../shared/data/gsm8k/train.jsonl",
                      "data.eval_path=../shared/data/gsm8k/test.jsonl"])
    # 7,473 rows: the last data.num_select = 200 are the select split, not trained on.
    train, select = load_examples(config, "train"), load_examples(config, "select")
    assert (len(train), len(select)) == (7273, 200)
    assert [(ex.id, ex.answer) for ex in (train[0], train[-1], select[0], select[-1])] == [
        ("train-1", "72"), ("train-7273", "9"), ("train-7274", "100"), ("train-7473", "50")
    ]
    assert train[0].question.startswith("Natalia sold clips to 48 of her friends in April")
    assert select[-1].solution.endswith("100/2=<<100/2=50>>50\n#### 50")


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
    first = evaluation[0]
    assert first.id == "harbor-eval-00000" and first.solution.endswith(f"FINAL: {first.answer}")
    assert first.columns == {"id": first.id, "answer": first.answer, "solution": first.solution}


BAD_ROWS = [
    ('{"question": "Q1", "answer": "1"}\n{"question": "Q2"}\n', "rows.jsonl row 2: missing field 'answer'"),
    ('{"question": "Q1", "answer": "1"}\n{"question": "  ", "answer": "3"}\n', "rows.jsonl row 2: field 'question' is empty"),
    (b'{"question": "Q1", "answer": "1"}\n{"question": "caf\xe9", "answer": "2"}\n', "rows.jsonl:2: not UTF-8"),
    ('{"question": "Q1", "answer": "1"}\n{"question": "Q2", "answer": 2\n', "rows.jsonl:2: not valid JSON"),
    ('["Q1", "1"]\n', "rows.jsonl:1: expected a JSON object"),
    ('{"question": [{"role": "user"}], "answer": "1"}\n', "rows.jsonl row 1: field 'question' message 1 needs a text \"role\" and \"content\""),
]


@pytest.mark.parametrize("content,message", BAD_ROWS, ids=["missing-answer", "empty-prompt", "non-utf8", "bad-json", "not-object", "bad-message"])
def test_bad_rows_name_file_row_and_field(tmp_path, content, message):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(GrpoError, match=message):
        load_examples(jsonl_config(str(path)), "train")


def test_gsm8k_row_without_hashes(tmp_path):
    path = write_rows(tmp_path / "g.jsonl", [json.dumps({"question": "Q", "answer": "it is 4"})])
    config = compose(["data=gsm8k", f"data.train_path={path}"])
    with pytest.raises(GrpoError, match=r"g.jsonl row 1: field 'answer' has no '#### <answer>' line"):
        load_examples(config, "train")


def test_missing_file_unset_path_and_unknown_suffix(tmp_path):
    with pytest.raises(GrpoError, match=r"data.train_path=.*nope.jsonl: no such file or folder"):
        load_examples(jsonl_config(str(tmp_path / "nope.jsonl")), "train")
    with pytest.raises(GrpoError, match=r"data.eval_path is not set: .* set data.eval_path=FILE or data.hf_path=DATASET_ID"):
        load_examples(compose(["data=jsonl", f"data.train_path={tmp_path}"]), "eval")
    (tmp_path / "rows.txt").write_text('{"question": "Q", "answer": "1"}\n')
    with pytest.raises(GrpoError, match=r"rows.txt: the suffix '.txt' names no format; use one of .parquet, .json"):
        load_examples(compose(["data=hf", f"data.eval_path={tmp_path / 'rows.txt'}"]), "eval")
    assert load_examples(compose(["data=jsonl", f"data.eval_path={tmp_path / 'rows.txt'}"]), "eval")[0].answer == "1"


def test_bad_row_is_one_line_error_from_the_cli(tmp_path):
    path = write_rows(tmp_path / "rows.jsonl", ['{"question": "Q1", "answer": "1"}', '{"question": "Q2", "solution": "x"}'])
    result = subprocess.run(
        [GRPO, "sft", "data=jsonl", f"data.train_path={path}", f"data.eval_path={path}"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr == f"error: {path} row 2: missing field 'answer' (data.answer_field=answer; the row has 'question', 'solution')\n"


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


def test_chat_prompts_render_through_the_chat_template_with_the_system_message(tmp_path, tokenizer):
    path = write_rows(tmp_path / "chat.jsonl", [
        json.dumps({"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "6 x 7?"}], "answer": "42"}),
        # A conversation that ends in the assistant's turn: the prompt before it, and that turn the solution (SFT).
        json.dumps({"prompt": [{"role": "user", "content": "5 + 5?"}, {"role": "assistant", "content": "FINAL: 10"}], "answer": "10"}),
    ])
    config = compose(["data=hf", f"data.train_path={path}", f"data.select_path={path}", "data.prompt_field=prompt",
                      "data.prompt_template='Ignored for chat prompts: {prompt}'"])
    brief, sum_ = load_examples(config, "train")
    assert brief.question == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "6 x 7?"}]
    assert format_prompt(brief, tokenizer, config.data) == "<s>[system] Be brief.<s>[user] 6 x 7?[assistant] "
    assert (sum_.question, sum_.solution) == ([{"role": "user", "content": "5 + 5?"}], "FINAL: 10")
    ids = encode_prompt(brief, tokenizer, config.data)  # the template writes BOS: the tokenizer adds none
    assert ids == tokenizer("<s>[system] Be brief.<s>[user] 6 x 7?[assistant] ", add_special_tokens=False)["input_ids"]


def test_an_assistant_message_in_the_solution_column_is_the_solution(tmp_path):
    """TRL's conversational prompt-completion rows: {"prompt": [user], "completion": [assistant]}."""
    path = write_rows(tmp_path / "pc.jsonl", [json.dumps({
        "prompt": [{"role": "user", "content": "2 + 2?"}], "completion": [{"role": "assistant", "content": "FINAL: 4"}], "answer": "4",
    })])
    config = compose(["data=hf", f"data.eval_path={path}", "data.prompt_field=prompt", "data.solution_field=completion"])
    [example] = load_examples(config, "eval")
    assert (example.question, example.solution) == ([{"role": "user", "content": "2 + 2?"}], "FINAL: 4")


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
    with pytest.raises(GrpoError, match="has no chat template, which chat prompts need"):
        format_prompt(Example("1", "Q", "1"), tokenizer, DataConfig(use_chat_template=True))
    with pytest.raises(GrpoError, match="has no chat template, which chat prompts need"):
        format_prompt(Example("1", [{"role": "user", "content": "Q"}], "1"), tokenizer, DataConfig())


def test_prompt_template_must_place_the_question():
    result = subprocess.run([GRPO, "config", "data.prompt_template=Solve:"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == "error: data.prompt_template='Solve:': must contain {prompt}, where the question goes\n"
