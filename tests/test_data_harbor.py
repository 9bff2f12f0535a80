"""Harbor problems: exact answers, consistent worked solutions, disjoint splits, byte-identical files."""

from __future__ import annotations

import json
import re
import subprocess
from fractions import Fraction

import pytest

from conftest import GRPO
from grpo_cli.config import DataConfig, VerifierConfig
from grpo_cli.data.harbor import LEVELS, column_working, decimal, generate, mixed, number
from grpo_cli.verifier.equivalence import terminates


def test_number_formats():
    assert decimal(Fraction(5, 2)) == "2.5"
    assert decimal(Fraction(3, 125)) == "0.024"
    assert decimal(Fraction(7)) == "7"
    assert mixed(Fraction(9, 4)) == "2 1/4"
    assert mixed(Fraction(3, 4)) == "3/4"
    assert mixed(Fraction(6, 3)) == "2"
    assert terminates(Fraction(7, 40)) and not terminates(Fraction(1, 3))
    assert number(Fraction(73, 2)) == "36.5"
    assert number(Fraction(70, 3)) == "23 1/3"


def test_same_seed_same_problems_other_seed_other_problems():
    data = DataConfig(num_train=300, num_eval=50)
    assert generate(data) == generate(DataConfig(num_train=300, num_eval=50))
    assert generate(data)[0] != generate(DataConfig(num_train=300, num_eval=50, seed=99))[0]


def test_eval_split_never_in_train_and_independent_of_train_size():
    train, evaluation, _ = generate(DataConfig())  # harbor_math's sizes: 28,000 and 2,000
    assert (len(train), len(evaluation)) == (28000, 2000)
    eval_questions = {ex.question for ex in evaluation}
    assert len(eval_questions) == 2000
    assert not eval_questions & {ex.question for ex in train}
    assert len({ex.question for ex in train}) == 28000
    assert generate(DataConfig(num_train=10))[1] == evaluation


def test_select_split_is_apart_from_train_and_eval_and_changes_neither():
    train, evaluation, select = generate(DataConfig(num_train=300, num_eval=50, num_select=40))
    assert len(select) == 40 and select[0].id == "harbor-select-00000"
    questions = {ex.question for ex in select}
    assert len(questions) == 40 and not questions & {ex.question for ex in train + evaluation}
    assert generate(DataConfig(num_train=300, num_eval=50, num_select=7))[:2] == (train, evaluation)


def test_column_working_by_hand():
    assert column_working(48, "+", 49) == ["units: 8 + 9 = 17, carry 1", "tens: 4 + 4 + 1 = 9"]
    assert column_working(31, "+", 7) == ["units: 1 + 7 = 8", "tens: 3 + 0 = 3"]
    assert column_working(34, "-", 28) == ["units: 14 - 8 = 6, borrow 1", "tens: 3 - 2 - 1 = 0"]
    assert column_working(47, "-", 23) == ["units: 7 - 3 = 4", "tens: 4 - 2 = 2"]


COLUMN = re.compile(r"units: (\d+) ([+-]) (\d) = (\d+)(, carry 1|, borrow 1)?\ntens: (\d) [+-] (\d)( [+-] 1)? = (\d)")


def test_level_one_is_one_add_or_subtract_below_50_in_either_style():
    train, _, _ = generate(DataConfig(num_train=500, num_eval=1, difficulty=[1]))
    styles = {"one line": 0, "column": 0}
    for ex in train:
        numbers = [int(n) for n in re.findall(r"\d+", ex.question)]
        assert all(n < 50 for n in numbers), ex.question
        *working, final = ex.solution.split("\n")
        assert final == f"FINAL: {ex.answer}"
        if len(working) == 1:
            styles["one line"] += 1
            a, op, b, _, result = working[0].split()
            assert int(result) == (int(a) + int(b) if op == "+" else int(a) - int(b)) >= 0
            assert ex.answer == result
        else:
            styles["column"] += 1
            units, op, _, units_result, _, _, _, _, tens_result = COLUMN.fullmatch("\n".join(working)).groups()
            assert int(ex.answer) == 10 * int(tens_result) + int(units_result) % 10
            assert working == column_working(numbers[0], op, numbers[1]), ex.question
    assert 200 < styles["column"] < 300, styles  # picked by a fair coin


def test_tool_solutions_call_the_calculator_on_the_same_problems():
    """data.tool_solutions=0.3: about 30% of the level-1 solutions are one calculator call with its output;
    the questions, answers and the other solutions are those of tool_solutions=0 (their own random stream)."""
    plain, _, _ = generate(DataConfig(num_train=1000, num_eval=1, difficulty=[1]))
    tools, _, _ = generate(DataConfig(num_train=1000, num_eval=1, difficulty=[1], tool_solutions=0.3))
    assert [(ex.question, ex.answer) for ex in tools] == [(ex.question, ex.answer) for ex in plain]
    calls = 0
    for with_tool, without in zip(tools, plain):
        if with_tool.solution == without.solution:
            assert "<calculator>" not in without.solution
            continue
        calls += 1
        call = re.fullmatch(r"<calculator>(\d+) ([+-]) (\d+)</calculator>\n<output>(\d+)</output>\nFINAL: (\d+)", with_tool.solution)
        assert call, with_tool.solution
        a, op, b, output, final = call.groups()
        assert [int(a), int(b)] == [int(n) for n in re.findall(r"\d+", with_tool.question)]
        assert int(output) == (int(a) + int(b) if op == "+" else int(a) - int(b)) == int(final) == int(with_tool.answer)
    assert 250 < calls < 350, calls
    # Levels 2 and 3 have no calculator solutions (their steps are more than one operation).
    mixed_levels, _, _ = generate(DataConfig(num_train=300, num_eval=1, difficulty=[2, 3], tool_solutions=1.0))
    assert not any("<calculator>" in ex.solution for ex in mixed_levels)


UNIT = re.compile(r" ?\b(kg|g|cm|m|minutes|hours)\b|%")


def exact_value(side: str) -> Fraction | None:
    """The exact value of an arithmetic expression such as "3 1/2 + 20 * 3/4", None for words."""
    expr = UNIT.sub("", side).strip()
    if not expr or re.search(r"[^\d.+\-*/() ]", expr):
        return None
    expr = re.sub(r"(\d+) (\d+)/(\d+)", r"(\1 + \2/\3)", expr)  # a mixed number
    return eval(re.sub(r"\d+(\.\d+)?", lambda m: f"F('{m[0]}')", expr), {"F": Fraction})


def test_every_arithmetic_step_is_right():
    """On every solution line, neighbouring sides of `=` in the same unit have the same exact value."""
    train, _, _ = generate(DataConfig(num_train=3000, num_eval=1))
    checked = 0
    for ex in train:
        for line in ex.solution.splitlines()[:-1]:
            sides = re.sub(r"^(units|tens): |, (carry|borrow) 1$", "", line).split("=")
            for left, right in zip(sides, sides[1:]):
                if UNIT.findall(left) != UNIT.findall(right):
                    continue  # a unit conversion such as "17 m = 1700 cm"
                a, b = exact_value(left), exact_value(right)
                if a is not None and b is not None:
                    assert a == b, (line, ex.question)
                    checked += 1
    assert checked > 3500


def test_levels_mix_as_asked():
    names = {family.__name__ for family in LEVELS[3]}
    assert len(names) == 6
    train, _, _ = generate(DataConfig(num_train=600, num_eval=1, difficulty=[3]))
    assert any("%" in ex.answer for ex in train) and any(" " in ex.answer and "/" in ex.answer for ex in train)
    assert any("median" in ex.question for ex in train) and any("mean" in ex.question for ex in train)


def test_every_worked_solution_scores_one():
    from grpo_cli.verifier import build_verifier

    train, evaluation, _ = generate(DataConfig(num_train=2000, num_eval=500))
    examples = train + evaluation
    with build_verifier(VerifierConfig(extract="final_line")) as verifier:
        right = verifier.score([ex.solution for ex in examples], [ex.answer for ex in examples])
        off_by_one = [re.sub(r"\d+", lambda m: str(int(m[0]) + 1), ex.answer, count=1) for ex in examples[:300]]
        wrong = verifier.score([ex.solution for ex in examples[:300]], off_by_one)
    assert [ex.id for ex, s in zip(examples, right) if s.reward != 1] == []
    assert sum(s.reward for s in wrong) == 0


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("harbor")
    args = ["data.num_train=400", "data.num_eval=100"]
    for name in ("first", "second"):
        subprocess.run([GRPO, "data", "harbor", "--out", str(out / name), *args], check=True, capture_output=True)
    subprocess.run([GRPO, "data", "harbor", "--out", str(out / "seed7"), *args, "data.seed=7"], check=True, capture_output=True)
    return out


def test_grpo_data_harbor_writes_byte_identical_files(written):
    for split, rows in (("train.jsonl", 400), ("eval.jsonl", 100), ("select.jsonl", 200)):
        first = (written / "first" / split).read_bytes()
        assert first == (written / "second" / split).read_bytes()
        assert first != (written / "seed7" / split).read_bytes()
        assert len(first.splitlines()) == rows
    row = json.loads((written / "first" / "eval.jsonl").read_text().splitlines()[0])
    assert list(row) == ["id", "question", "answer", "solution"]
    assert row["id"] == "harbor-eval-00000" and row["solution"].endswith(f"FINAL: {row['answer']}")


def test_written_solutions_pass_grpo_verify(written, tmp_path):
    rows = [json.loads(line) for line in (written / "first" / "train.jsonl").read_text().splitlines()]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"completion": r["solution"], "answer": r["answer"]}) + "\n" for r in rows))
    subprocess.run(
        [GRPO, "verify", str(tmp_path / "in.jsonl"), "verifier.extract=final_line", "--output", str(tmp_path / "out.jsonl")],
        check=True, capture_output=True,
    )
    rewards = [json.loads(line)["reward"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rewards == [1.0] * 400
