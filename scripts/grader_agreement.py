"""Agreement of our math verifier with another grader's own labelled test cases.

    .venv/bin/python scripts/grader_agreement.py PATH [--extract auto] [--show-agreements]

PATH is a checkout of huggingface/Math-Verify (or a folder holding its `tests/`): its test files list
labelled cases as pytest parametrize rows, (gold, prediction, expected) with an optional last setting
(precision, strict, allow_set_relation_comp). This script reads those rows from the files' syntax trees,
without importing or running them, scores each prediction as a completion against the gold as the reference
answer with `verifier.extract` (auto by default), and prints the agreement, a breakdown per test function,
and every disagreement. Nothing of the suite is copied into this project: it is read where it lies.
"""

from __future__ import annotations

import argparse
import ast
import collections
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from grpo_cli.config import VerifierConfig
from grpo_cli.verifier.math_check import check_math

GOLD_NAMES = ("gold",)
PRED_NAMES = ("pred",)
LABEL_NAMES = ("expected", "result")


@dataclass(frozen=True)
class Case:
    kind: str  # file::test function
    gold: str
    pred: str
    label: int
    setting: str  # the row's extra parameters as written ("precision=2"), "" for none


def collect(root: Path) -> list[Case]:
    """Every labelled (gold, pred, expected) row of the suite's test files under `root`."""
    tests = root / "tests" if (root / "tests").is_dir() else root
    cases = []
    for path in sorted(tests.glob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for function in (node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)):
            for decorator in function.decorator_list:
                cases += _parametrized_cases(decorator, f"{path.name}::{function.name}")
    return cases


def _parametrized_cases(decorator: ast.expr, kind: str) -> list[Case]:
    if not (isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("parametrize") and len(decorator.args) >= 2):
        return []
    names = [name.strip() for name in ast.literal_eval(decorator.args[0]).split(",")] if isinstance(decorator.args[0], ast.Constant) else []
    if not (set(names) & set(GOLD_NAMES) and set(names) & set(PRED_NAMES) and set(names) & set(LABEL_NAMES)):
        return []
    gold, pred = _index(names, GOLD_NAMES), _index(names, PRED_NAMES)
    label = _index(names, LABEL_NAMES)
    extra = [i for i in range(len(names)) if i not in (gold, pred, label)]
    cases = []
    for row in decorator.args[1].elts:  # comments and commented-out rows are not in the tree
        values = [_value(element) for element in row.elts]
        setting = ", ".join(f"{names[i]}={values[i]!r}" for i in extra)
        cases.append(Case(kind, values[gold], values[pred], int(values[label]), setting))
    return cases


def _value(node: ast.expr):
    """A literal, or an f-string of literals and math-module calls (f"{math.sqrt(17):.15f}")."""
    if not isinstance(node, ast.JoinedStr):
        return ast.literal_eval(node)
    parts = []
    for part in node.values:
        if isinstance(part, ast.FormattedValue):
            call = part.value
            if not (isinstance(call, ast.Call) and ast.unparse(call.func).startswith("math.")):
                raise ValueError(f"unsupported f-string in the suite: {ast.unparse(node)}")
            value = getattr(math, ast.unparse(call.func).removeprefix("math."))(*map(ast.literal_eval, call.args))
            parts.append(format(value, _value(part.format_spec) if part.format_spec else ""))
        else:
            parts.append(part.value)
    return "".join(parts)


def _index(names: list[str], wanted: tuple[str, ...]) -> int:
    return next(i for i, name in enumerate(names) if name in wanted)


def score(cases: list[Case], extract: str) -> list[int]:
    verdicts = []
    for case in cases:
        config = VerifierConfig(extract=extract, rel_tol=_tolerance(case.setting))
        try:
            verdicts.append(int(check_math(case.pred, case.gold, config).correctness))
        except ValueError:  # an empty reference answer
            verdicts.append(0)
    return verdicts


def _tolerance(setting: str) -> float:
    """The row's own tolerance: math-verify's `precision` (decimal places it rounds to) as verifier.rel_tol;
    its other settings (strict, allow_set_relation_comp) have no counterpart and are listed with the row."""
    precision = re.search(r"precision=(\d+)", setting)
    return 10.0 ** -int(precision.group(1)) if precision else VerifierConfig.rel_tol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a Math-Verify checkout, or a folder holding its tests/")
    parser.add_argument("--extract", default="auto", help="verifier.extract (default auto)")
    args = parser.parse_args()
    cases = collect(args.path)
    if not cases:
        sys.exit(f"error: no labelled (gold, pred, expected) rows found under {args.path}; pass a Math-Verify checkout")
    verdicts = score(cases, args.extract)
    by_kind: dict[str, list[bool]] = collections.defaultdict(list)
    for case, verdict in zip(cases, verdicts):
        by_kind[case.kind].append(verdict == case.label)
    for kind, agreements in by_kind.items():
        print(f"{sum(agreements):4d}/{len(agreements):<4d} {kind}")
    print("\ndisagreements (label, ours, kind, setting, gold | prediction's last 160 characters):")
    for case, verdict in zip(cases, verdicts):
        if verdict != case.label:
            print(f"  {case.label} {verdict} {case.kind} {case.setting} {case.gold[-80:]!r} | {case.pred[-160:]!r}")
    agreed = sum(verdict == case.label for case, verdict in zip(cases, verdicts))
    print(f"\nagreement: {agreed}/{len(cases)} = {agreed / len(cases):.1%} (verifier.extract={args.extract})")


if __name__ == "__main__":
    main()
