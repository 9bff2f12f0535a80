"""Load a split as a list of Example (prompts.py turns an Example into the model's prompt).

data.name selects the source:
  harbor  generated in memory from data.seed, data.difficulty, data.num_train, data.num_eval and data.num_select
  hf      rows read by the datasets library. Each split from data.<split>_path when set: a file whose suffix
          names its format (.parquet, .json, .jsonl, .csv, .arrow), a folder of such files, or a folder written
          by save_to_disk (a DatasetDict's split is data.<split>_split); else the split data.<split>_split of
          data.hf_path, a Hub dataset id with configuration data.hf_name (or a local folder laid out like one)
  jsonl   hf, every file read as JSON lines whatever its suffix
  gsm8k   hf; the answer is what follows the last `####`, the solution is the whole text

A row's data.prompt_field is the question: text, or chat messages [{"role", "content"}, ...] (TRL's
conversational format) that the tokenizer's chat template renders, system messages kept. A chat prompt that
ends in an assistant turn is the prompt before it, and that turn is the worked solution unless
data.solution_field holds one (text, or an assistant message). data.answer_field is the reference answer. Every
column but the prompt's is kept in Example.columns, for reward functions that read them by name.

The select split chooses the best checkpoint, so the eval split that reports the result never does. It is
data.select_path, else data.hf_path's data.select_split when set; otherwise the last data.num_select rows of the
train split, which then leave it (neither SFT nor GRPO trains on them).

Rows are read through Arrow (the datasets library's cache, memory-mapped) and become Examples once, batch by
batch. A Hub id is looked up with a short timeout first: offline, that is a one-line error saying how to point at
local files, not minutes of retries. Relative paths are resolved against the current directory. A bad row raises
a one-line GrpoError naming the source, the row and the field (a JSON lines file that does not parse: its line).
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
FORMATS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}
# Seconds the Hub has to answer whether a dataset exists before the machine counts as offline.
HUB_TIMEOUT_S = 10.0
ROWS_PER_BATCH = 1024


def load_examples(config: Config, split: Split) -> list[Example]:
    """The train, eval or select split of the dataset that config.data describes."""
    data = config.data
    if data.name == "harbor":
        from grpo_cli.data.harbor import generate

        train, evaluation, select = generate(data)
        return {"train": train, "eval": evaluation, "select": select}[split]
    if split == "eval" or data.select_path or (data.hf_path and data.select_split):
        return _read_split(data, split)
    rows = _read_split(data, "train")
    if len(rows) <= data.num_select:
        raise GrpoError(
            f"data.num_select={data.num_select}: the select split is carved off the end of the train split "
            f"({_describe(data, 'train')}), which has only {len(rows)} rows; set data.select_path=FILE (or "
            "data.select_split) or a smaller data.num_select"
        )
    cut = len(rows) - data.num_select
    return rows[:cut] if split == "train" else rows[cut:]


def _read_split(data: DataConfig, split: Split) -> list[Example]:
    """Every row of `split` as an Example: from data.<split>_path, else from data.hf_path."""
    path = getattr(data, f"{split}_path")
    if path:
        dataset, json_lines = _read_local(Path(path), f"data.{split}_path", data, split)
        source, stem = str(path), Path(path).stem
    elif data.hf_path:
        dataset, json_lines = _read_hub(data, split), []
        source, stem = f"{data.hf_path} split {getattr(data, f'{split}_split')}", getattr(data, f"{split}_split")
    else:
        raise GrpoError(
            f"data.{split}_path is not set: data={data.name} reads its {split} split from a file or folder, or from "
            f"data.hf_path's data.{split}_split; set data.{split}_path=FILE or data.hf_path=DATASET_ID"
        )
    return _examples(dataset, data, source, stem, json_lines)


def _describe(data: DataConfig, split: Split) -> str:
    path = getattr(data, f"{split}_path")
    return f"data.{split}_path={path}" if path else f"data.hf_path={data.hf_path} split {getattr(data, f'{split}_split')}"


def _datasets():
    import datasets

    datasets.disable_progress_bars()  # one bar per file conversion would bury the run's own output
    return datasets


def _read_local(path: Path, key: str, data: DataConfig, split: Split):
    """(the Dataset at `path`, the JSON lines files it was read from: a bad line is reported by them)."""
    datasets = _datasets()
    if not path.exists():
        raise GrpoError(f"{key}={path}: no such file or folder (relative paths start at {Path.cwd()})")
    if path.is_dir() and any((path / name).is_file() for name in ("dataset_info.json", "dataset_dict.json")):
        saved = datasets.load_from_disk(str(path))
        if not isinstance(saved, datasets.DatasetDict):
            return saved, []
        name = getattr(data, f"{split}_split")
        if name not in saved:
            raise GrpoError(
                f"{key}={path}: a saved DatasetDict without the split {name!r} (data.{split}_split); its splits: "
                f"{', '.join(saved)}"
            )
        return saved[name], []
    files = sorted(f for f in path.iterdir() if f.suffix.lower() in FORMATS) if path.is_dir() else [path]
    if not files:
        raise GrpoError(f"{key}={path}: the folder holds no {', '.join(FORMATS)} files (nor a save_to_disk dataset)")
    kinds = {"json" if data.name == "jsonl" else FORMATS.get(f.suffix.lower()) for f in files}
    if None in kinds:
        raise GrpoError(
            f"{key}={path}: the suffix {path.suffix!r} names no format; use one of {', '.join(FORMATS)} (or "
            "data=jsonl to read any file as JSON lines)"
        )
    if len(kinds) > 1:
        raise GrpoError(f"{key}={path}: the folder mixes {' and '.join(sorted(kinds))} files; keep one format per folder")
    (kind,) = kinds
    json_lines = [f for f in files if data.name == "jsonl" or f.suffix.lower() == ".jsonl"]
    try:
        dataset = datasets.load_dataset(kind, data_files=[str(f) for f in files], split="train")
    except Exception as exc:  # pyarrow, pandas and json errors alike: one line, at the bad line when there is one
        _check_json_lines(json_lines)
        raise GrpoError(f"{key}={path}: the datasets library cannot read it as {kind}: {_first_line(exc)}") from None
    return dataset, json_lines


def _read_hub(data: DataConfig, split: Split):
    datasets = _datasets()
    name = getattr(data, f"{split}_split")
    if not name:
        raise GrpoError(f"data.{split}_split is empty: name the split of data.hf_path={data.hf_path} to read")
    if not Path(data.hf_path).is_dir():
        _check_hub(data.hf_path)
    try:
        return datasets.load_dataset(data.hf_path, data.hf_name or None, split=name)
    except Exception as exc:  # unknown split or configuration, a failed download: the library's own message
        raise GrpoError(f"data.hf_path={data.hf_path} (data.hf_name={data.hf_name!r}, data.{split}_split={name}): {_first_line(exc)}") from None


def _check_hub(dataset_id: str) -> None:
    """Ask the Hub, with a short timeout and no retries, whether `dataset_id` exists: offline, a one-line
    error saying what to do instead; a missing or gated dataset, the Hub's answer."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    try:
        HfApi().dataset_info(dataset_id, timeout=HUB_TIMEOUT_S)
    except OfflineModeIsEnabled:
        raise GrpoError(_offline(dataset_id, "HF_HUB_OFFLINE is set")) from None
    except RepositoryNotFoundError:
        raise GrpoError(
            f"data.hf_path={dataset_id}: no such dataset on the Hub (or it is private or gated: log in with `hf auth login`)"
        ) from None
    except HfHubHTTPError as exc:
        raise GrpoError(f"data.hf_path={dataset_id}: the Hub answered {_first_line(exc)}") from None
    except Exception as exc:  # no answer at all: no route, no DNS, a timeout
        raise GrpoError(_offline(dataset_id, f"{constants.ENDPOINT} cannot be reached: {_first_line(exc)}")) from None


def _offline(dataset_id: str, why: str) -> str:
    return (
        f"data.hf_path={dataset_id} is a Hub dataset, but this machine is offline ({why}); point data.train_path "
        "and data.eval_path at local copies (parquet, json, jsonl, csv or arrow files, or save_to_disk folders)"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_json_lines(files: list[Path]) -> None:
    """Raise jsonl_rows' error for the first line of `files` that is not a UTF-8 JSON object."""
    for path in files:
        for _ in jsonl_rows(path):
            pass


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


def _examples(dataset, data: DataConfig, source: str, stem: str, json_lines: list[Path]) -> list[Example]:
    """The rows of `dataset` as Examples, read a batch at a time; `source` names it in errors."""
    datasets = _datasets()
    columns = dataset.column_names
    for name, key in ((data.prompt_field, "data.prompt_field"), (data.answer_field, "data.answer_field")):
        if name not in columns:
            _check_json_lines(json_lines)  # a line that is no JSON object is the better explanation
            raise GrpoError(f"{source}: no column {name!r} ({key}={name}; the columns are {', '.join(map(repr, columns))})")
    for name in (data.prompt_field, data.answer_field, data.solution_field):
        if isinstance(dataset.features.get(name), datasets.Json):
            raise GrpoError(
                f"{source}: column {name!r} holds text in some rows and numbers or lists in others, which the datasets "
                "library reads as JSON values (so '007' would become 7); write every value of it the same way, as text"
            )
    examples = []
    try:
        for batch in dataset.iter(batch_size=ROWS_PER_BATCH):
            for values in zip(*batch.values()):
                number = len(examples) + 1
                examples.append(_example(dict(zip(batch, values)), data, f"{source} row {number}", f"{stem}-{number}"))
    except UnicodeDecodeError as exc:  # pyarrow decodes text when a row is read, not when the file is
        _check_json_lines(json_lines)
        raise GrpoError(f"{source} row {len(examples) + 1}: not UTF-8 ({exc.reason}); re-encode the file as UTF-8") from None
    if not examples:
        raise GrpoError(f"{source}: no rows")
    return examples


def _example(row: dict, data: DataConfig, where: str, default_id: str) -> Example:
    question = _prompt(row, data.prompt_field, where)
    answer = _text(row, data.answer_field, "data.answer_field", where)
    solution = row.get(data.solution_field)
    if isinstance(solution, list):  # TRL's conversational completion: the assistant's message
        solution = _messages(solution, data.solution_field, where)[-1]["content"]
    solution = "" if solution is None else str(solution)
    if isinstance(question, list) and question[-1]["role"] == "assistant":
        if len(question) == 1:
            raise GrpoError(f"{where}: field {data.prompt_field!r} holds only an assistant message; the prompt needs a user turn")
        question, solution = question[:-1], solution or question[-1]["content"]
    if data.name == "gsm8k":
        solution = answer
        if "####" not in answer:
            raise GrpoError(f"{where}: field {data.answer_field!r} has no '#### <answer>' line (data=gsm8k)")
        answer = answer.rsplit("####", 1)[1].strip()
        if not answer:
            raise GrpoError(f"{where}: field {data.answer_field!r} has nothing after '####' (data=gsm8k)")
    row_id = row.get("id")
    columns = {name: value for name, value in row.items() if name != data.prompt_field}
    return Example(default_id if row_id is None else str(row_id), question, answer, solution, columns=columns)


def _prompt(row: dict, name: str, where: str) -> str | list[dict]:
    value = row[name]
    return _messages(value, name, where) if isinstance(value, list) else _text(row, name, "data.prompt_field", where)


def _text(row: dict, name: str, key: str, where: str) -> str:
    value = row.get(name)
    if value is None:
        present = [field for field, item in row.items() if item is not None]
        raise GrpoError(f"{where}: missing field {name!r} ({key}={name}; the row has {', '.join(map(repr, present)) or 'no fields'})")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise GrpoError(f"{where}: field {name!r} must be a string or a number, got {type(value).__name__}")
    # Arrow widens a column of 42 and 4.5 to floats: the whole numbers read as written, "42", not "42.0".
    text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if not text.strip():
        raise GrpoError(f"{where}: field {name!r} is empty")
    return text


def _messages(value: list, name: str, where: str) -> list[dict]:
    """Chat messages as the chat template takes them; keys a format left empty in this row (None) dropped."""
    if not value:
        raise GrpoError(f"{where}: field {name!r} is an empty list of messages")
    messages = []
    for number, message in enumerate(value, start=1):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str) and isinstance(message.get("content"), str)):
            raise GrpoError(f"{where}: field {name!r} message {number} needs a text \"role\" and \"content\", got {message!r:.80}")
        messages.append({key: item for key, item in message.items() if item is not None})
    return messages
