"""Load a split as a list of Example, and turn an Example into the model's prompt.

data.name selects the source:
  harbor  generated in memory from data.seed, data.difficulty, data.num_train, data.num_eval and data.num_select
  jsonl   data.train_path / data.eval_path, fields named by data.prompt_field, answer_field, solution_field
  gsm8k   the same files as jsonl; the answer is what follows the last `####`, the solution is the whole text

The select split chooses the best checkpoint, so the eval split that reports the result never does. For
jsonl and gsm8k it is data.select_path; when that is unset, the last data.num_select rows of the train file,
which then leave the train split (neither SFT nor GRPO trains on them).

Relative paths are resolved against the current directory. A bad row raises a one-line GrpoError naming the
file, the line and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from grpo_cli.config import Config, DataConfig
from grpo_cli.data import Example
from grpo_cli.errors import GrpoError

Split = Literal["train", "eval", "select"]


def load_examples(config: Config, split: Split) -> list[Example]:
    """The train, eval or select split of the dataset that config.data describes."""
    data = config.data
    if data.name == "harbor":
        from grpo_cli.data.harbor import generate

        train, evaluation, select = generate(data)
        return {"train": train, "eval": evaluation, "select": select}[split]
    if split == "eval":
        return read_jsonl(_path(data.eval_path, "data.eval_path", data), data, "data.eval_path")
    if split == "select" and data.select_path:
        return read_jsonl(Path(data.select_path), data, "data.select_path")
    rows = read_jsonl(_path(data.train_path, "data.train_path", data), data, "data.train_path")
    if data.select_path:
        return rows
    if len(rows) <= data.num_select:
        raise GrpoError(
            f"data.num_select={data.num_select}: the select split is carved off the end of data.train_path="
            f"{data.train_path}, which has only {len(rows)} rows; set data.select_path=FILE or a smaller data.num_select"
        )
    cut = len(rows) - data.num_select
    return rows[:cut] if split == "train" else rows[cut:]


def _path(path: str, key: str, data: DataConfig) -> Path:
    if not path:
        split = key.removeprefix("data.").removesuffix("_path")
        raise GrpoError(f"{key} is not set: data={data.name} reads its {split} split from a JSONL file; set {key}=FILE")
    return Path(path)


def jsonl_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """("file:line", row) for each non-blank line of `path`; a line that is not a UTF-8 JSON object is an error."""
    with path.open("rb") as f:
        for line_number, raw in enumerate(f, start=1):
            where = f"{path}:{line_number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise GrpoError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start}); re-encode the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise GrpoError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise GrpoError(f"{where}: expected a JSON object per line")
            yield where, row


def read_jsonl(path: Path, data: DataConfig, key: str) -> list[Example]:
    """Rows of `path` as Examples; `key` names the config key that points here, for the error messages."""
    if not path.is_file():
        raise GrpoError(f"{key}={path}: no such file (relative paths start at {Path.cwd()})")
    examples = [
        _example(row, data, where, f"{path.stem}-{where.rpartition(':')[2]}") for where, row in jsonl_rows(path)
    ]
    if not examples:
        raise GrpoError(f"{key}={path}: the file has no rows")
    return examples


def _example(row: dict, data: DataConfig, where: str, default_id: str) -> Example:
    question = _field(row, data.prompt_field, "data.prompt_field", where)
    answer = _field(row, data.answer_field, "data.answer_field", where)
    solution = str(row.get(data.solution_field) or "")
    if data.name == "gsm8k":
        solution = answer
        if "####" not in answer:
            raise GrpoError(f"{where}: field {data.answer_field!r} has no '#### <answer>' line (data=gsm8k)")
        answer = answer.rsplit("####", 1)[1].strip()
        if not answer:
            raise GrpoError(f"{where}: field {data.answer_field!r} has nothing after '####' (data=gsm8k)")
    return Example(str(row.get("id", default_id)), question, answer, solution)


def _field(row: dict, name: str, key: str, where: str) -> str:
    if name not in row:
        raise GrpoError(f"{where}: missing field {name!r} ({key}={name}; the row has {', '.join(map(repr, row)) or 'no fields'})")
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise GrpoError(f"{where}: field {name!r} must be a string or a number, got {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise GrpoError(f"{where}: field {name!r} is empty")
    return text


def fill_template(example: Example, data: DataConfig) -> str:
    """data.prompt_template with {prompt} replaced by the question."""
    return data.prompt_template.replace("{prompt}", example.question)


def format_prompt(example: Example, tokenizer, data: DataConfig) -> str:
    """fill_template's text, wrapped in the tokenizer's chat template (as one user turn, generation prompt
    added) when data.use_chat_template is set."""
    text = fill_template(example, data)
    return chat_text([{"role": "user", "content": text}], tokenizer) if data.use_chat_template else text


def chat_text(messages: list[dict], tokenizer, tools: list[dict] | None = None) -> str:
    """`messages` in the tokenizer's chat template, generation prompt added; `tools`: tool schemas for a
    template that lists them (multi-turn rollouts' chat form)."""
    if not getattr(tokenizer, "chat_template", None):
        raise GrpoError(
            f"data.use_chat_template=true but the tokenizer {tokenizer.name_or_path!r} has no chat template; "
            "set data.use_chat_template=false"
        )
    return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)


def encode_prompt(example: Example, tokenizer, data: DataConfig) -> list[int]:
    """Token ids of the formatted prompt (prompt_token_ids)."""
    return prompt_token_ids(format_prompt(example, tokenizer, data), tokenizer, data.use_chat_template)


def prompt_token_ids(text: str, tokenizer, chat_template: bool) -> list[int]:
    """Token ids of a prompt's text. A chat template writes its own special tokens (BOS among them), so the
    tokenizer adds none then; a plain template gets the tokenizer's usual ones (BOS for the tiny model)."""
    return tokenizer(text, add_special_tokens=not chat_template)["input_ids"]
