"""The verifier self-test: the training data's gold answers and reference solutions must score 1."""

import json
import re

import pytest

from conftest import GSM8K_DIR, TINY_RUN
from grpo_cli.cli import main

HARBOR = ["recipe=demo", "data.num_train=200", "data.num_eval=10"]


def self_test(argv: list[str], capsys) -> tuple[int, str]:
    try:
        main(["verify", "--self-test", *argv])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, (captured.out + captured.err).strip()


def test_harbor_gold_answers_and_solutions_all_score_one(capsys):
    code, line = self_test(HARBOR, capsys)
    assert (code, line) == (0, "verifier self-test: 400/400 gold answers and reference solutions score 1 (100.0%, verifier.self_test_min=0.99)")


def test_gsm8k_gold_answers_and_solutions_all_score_one(tmp_path, capsys, gsm8k):
    first_rows = (GSM8K_DIR / "train.jsonl").read_text().splitlines()[:500]  # the whole split: ~10 s
    (tmp_path / "train.jsonl").write_text("\n".join(first_rows) + "\n")
    # The last data.num_select = 200 rows are the select split, not training data: 300 rows are checked.
    code, line = self_test(["recipe=gsm8k", f"data.train_path={tmp_path / 'train.jsonl'}"], capsys)
    assert (code, line) == (0, "verifier self-test: 600/600 gold answers and reference solutions score 1 (100.0%, verifier.self_test_min=0.99)")


@pytest.mark.parametrize(
    "setting, failure",
    [
        # Harbor's solutions end in "FINAL: <answer>": with another marker no solution has an answer.
        ("verifier.marker=ANSWER:", r"harbor-train-00000 solution '.*FINAL: [^']*' -> no_answer"),
        # In boxed mode the gold answers, written as \boxed{...}, pass; the solutions have no box.
        ("verifier.extract=boxed", r"harbor-train-00000 solution '.*' -> no_answer"),
        # GSM8K mode reads the text after ####; the solutions' FINAL: lines have none.
        ("verifier.extract=gsm8k", r"harbor-train-00000 solution '.*' -> no_answer"),
    ],
)
def test_a_wrong_marker_or_extraction_mode_fails_with_one_line(setting, failure, capsys):
    code, line = self_test([*HARBOR, setting], capsys)
    assert code != 0 and "\n" not in line
    assert line.startswith("error: verifier self-test: 200/400 gold answers and reference solutions score 1 (50.0% < verifier.self_test_min=0.99): 200 failed, e.g. ")
    assert re.search(failure, line)
    assert len(re.findall(r"harbor-train-\d+ solution", line)) == 3
    assert "Check verifier.extract=" in line and "verifier.marker=" in line


def test_the_threshold_is_verifier_self_test_min(capsys):
    code, line = self_test([*HARBOR, "verifier.marker=ANSWER:", "verifier.self_test_min=0.5"], capsys)
    assert (code, line) == (0, "verifier self-test: 200/400 gold answers and reference solutions score 1 (50.0%, verifier.self_test_min=0.5)")


def test_code_solutions_must_pass_their_tests(tmp_path, capsys):
    tests = json.dumps({"tests": ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]})
    rows = [
        {"id": "right", "question": "Write add(a, b).", "answer": tests, "solution": "def add(a, b):\n    return a + b"},
        {"id": "fenced", "question": "Write add(a, b).", "answer": tests, "solution": "Sum them.\n```python\ndef add(a, b):\n    return b + a\n```"},
        {"id": "wrong", "question": "Write add(a, b).", "answer": tests, "solution": "def add(a, b):\n    return a * b"},
        {"id": "none", "question": "Write add(a, b).", "answer": tests},
    ]
    path = tmp_path / "code.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, line = self_test(["data=jsonl", f"data.train_path={path}", f"data.select_path={path}", "verifier=code"], capsys)
    assert code != 0
    assert line.startswith("error: verifier self-test: 2/3 gold answers and reference solutions score 1 (66.7% < verifier.self_test_min=0.99): 1 failed, e.g. wrong solution ")
    assert "-> wrong" in line


def test_train_stops_before_any_model_loads(tmp_path, capsys):
    no_model = tmp_path / "no-model-here"
    with pytest.raises(SystemExit):
        main(["train", *TINY_RUN, f"model.name_or_path={no_model}", f"train.output_dir={tmp_path / 'run'}", "verifier.extract=boxed"])
    error = capsys.readouterr().err
    assert "error: verifier self-test: 400/800 gold answers" in error and "no-model-here" not in error
    assert not (tmp_path / "run").exists()


def test_self_test_takes_overrides_not_rows(capsys):
    code, line = self_test(["--answer", "1", "--completion", "FINAL: 1"], capsys)
    assert code != 0
    assert line == "error: --self-test checks the training data named by the config: give overrides, not INPUT.jsonl or --answer/--completion"
