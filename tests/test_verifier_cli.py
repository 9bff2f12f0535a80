"""`grpo verify`: JSONL in, one JSON line per row out, a summary on stderr, one-line errors."""

import json

import pytest

from grpo_cli.cli import build_parser, main

ROWS = [
    {"completion": "3 crates of 6\nFINAL: 18", "answer": "18"},
    {"completion": "FINAL: $2,125.00", "answer": 2125},
    {"completion": "FINAL: 0.5", "answer": "50"},
    {"completion": "I am not sure.", "answer": "7"},
]


@pytest.fixture
def rows_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return path


def test_input_file_and_overrides_are_told_apart_by_the_equals_sign(tmp_path):
    parser = build_parser()
    args = parser.parse_args(["verify", "verifier.extract=gsm8k", "rows.jsonl", "verifier.timeout_s=0.5"])
    assert (args.input, args.overrides) == ("rows.jsonl", ["verifier.extract=gsm8k", "verifier.timeout_s=0.5"])
    odd_name = tmp_path / "lr=1e-5.jsonl"
    odd_name.touch()
    args = parser.parse_args(["verify", str(odd_name)])
    assert (args.input, args.overrides) == (str(odd_name), [])
    assert parser.parse_args(["verify", "--answer", "1", "--completion", "1"]).input is None


def test_verify_writes_a_line_per_row_and_a_summary(rows_file, tmp_path, capsys):
    output = tmp_path / "scores.jsonl"
    main(["verify", str(rows_file), "verifier.extract=final_line", "--output", str(output)])
    scores = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(s["reward"], s["reason"], s["extracted"]) for s in scores] == [
        (1.0, "correct", "18"),
        (1.0, "correct", "$2,125.00"),
        (0.0, "wrong", "0.5"),
        (0.0, "no_answer", None),
    ]
    assert set(scores[0]) == {"reward", "correct", "extracted", "reason", "components", "by_function"}
    summary = capsys.readouterr().err
    assert "4 rows: accuracy 50.0% (2/4), parse failures 1, timeouts 0, errors 0, mean reward 0.5000" in summary
    assert "checks/s; verifier math-v3" in summary


def test_field_names_can_be_changed(tmp_path, capsys):
    path = tmp_path / "renamed.jsonl"
    path.write_text(json.dumps({"response": "#### 18.", "gold": "18"}) + "\n")
    main(["verify", str(path), "verifier.extract=gsm8k", "--completion-field", "response", "--answer-field", "gold"])
    assert json.loads(capsys.readouterr().out)["correct"] is True


def test_check_one_from_the_command_line(capsys):
    main(["verify", "--answer", "18", "--completion", "She earns $18 a day.\nFINAL: 18 dollars", "verifier.extract=final_line"])
    captured = capsys.readouterr()
    assert json.loads(captured.out)["reason"] == "correct"
    assert "1 rows: accuracy 100.0% (1/1)" in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["verify"], "nothing to verify: give INPUT.jsonl, or --answer A --completion C"),
        (["verify", "--answer", "18"], "--answer and --completion go together: grpo verify --answer 18 --completion 'FINAL: 18'"),
        (["verify", "missing.jsonl"], "missing.jsonl: cannot read (No such file or directory)"),
    ],
)
def test_usage_errors_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == f"error: {message}\n"


def test_a_bad_row_is_named_by_file_and_line(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"completion": "FINAL: 1", "answer": "1"}) + "\n" + json.dumps({"text": "FINAL: 2"}) + "\n")
    with pytest.raises(SystemExit):
        main(["verify", str(path)])
    assert capsys.readouterr().err == f"error: {path}:2: no field 'completion'; name the field with --completion-field\n"
