"""`grpo verify INPUT.jsonl [overrides]`, `grpo verify --answer 18 --completion "..."` and
`grpo verify --self-test [overrides]` (self_test.py: the training data's own answers must score 1) and
`grpo verify --edge-cases [overrides]` (edge_cases.py: hostile completions must score finitely, without a crash).

One JSON line per row (reward, correct, extracted, reason, components, by_function) goes to --output or stdout, in
input order; a summary (accuracy, parse failures, timeouts, errors, checks/s) goes to stderr. Rows are
scored as the trainer scores them (visible tests only, for code).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from grpo_cli.config import Config
from grpo_cli.data.loaders import jsonl_rows, load_examples
from grpo_cli.errors import GrpoError
from grpo_cli.monitoring.progress import Progress
from grpo_cli.verifier import Score, build_verifier
from grpo_cli.verifier.self_test import check_verifier

# Rows scored per call: large enough to keep every worker busy, small enough for the progress to move.
PROGRESS_CHUNK = 256


def verify_command(args: argparse.Namespace, config: Config) -> None:
    if args.self_test:
        if args.input or args.answer is not None or args.completion is not None:
            raise GrpoError("--self-test checks the training data named by the config: give overrides, not INPUT.jsonl or --answer/--completion")
        print(check_verifier(config, load_examples(config, "train")))
        return
    if args.edge_cases:
        return edge_cases_command(args, config)
    completions, answers = _rows(args)
    with build_verifier(config.verifier) as verifier:
        start = time.perf_counter()
        scores = []
        with Progress("verify", len(completions)) as progress:
            for first in range(0, len(completions), PROGRESS_CHUNK):
                scores += verifier.score(completions[first : first + PROGRESS_CHUNK], answers[first : first + PROGRESS_CHUNK])
                progress.advance(len(completions[first : first + PROGRESS_CHUNK]))
        elapsed = time.perf_counter() - start
        identity = f"{verifier.version} config {verifier.config_hash}"
    lines = "".join(json.dumps(dataclasses.asdict(score)) + "\n" for score in scores)
    if args.output:
        Path(args.output).write_text(lines)
    else:
        sys.stdout.write(lines)
    print(summary(scores, elapsed) + f"; verifier {identity}", file=sys.stderr)


def edge_cases_command(args: argparse.Namespace, config: Config) -> None:
    """Print the battery's table; exit 1 naming every failed case."""
    from grpo_cli.verifier import check_setup
    from grpo_cli.verifier.edge_cases import failures_line, format_table, run_edge_cases

    if args.input or args.answer is not None or args.completion is not None:
        raise GrpoError("--edge-cases brings its own completions: give overrides, not INPUT.jsonl or --answer/--completion")
    # TRL-style reward functions read a row's columns: they get the first training example's, as at `grpo train`.
    batched = any(function.batched for function in check_setup(config.verifier))
    outcomes = run_edge_cases(config.verifier, load_examples(config, "train")[0] if batched else None)
    print(format_table(outcomes))
    failed = failures_line(outcomes)
    if failed:
        raise GrpoError(failed)
    print(f"all {len(outcomes)} edge cases passed", file=sys.stderr)


def summary(scores: list[Score], elapsed_s: float) -> str:
    n = len(scores)
    count = {reason: sum(s.reason == reason for s in scores) for reason in ("correct", "no_answer", "timeout", "error")}
    mean_reward = sum(s.reward for s in scores) / n
    return (
        f"{n} rows: accuracy {count['correct'] / n:.1%} ({count['correct']}/{n}), "
        f"parse failures {count['no_answer']}, timeouts {count['timeout']}, errors {count['error']}, "
        f"mean reward {mean_reward:.4f}, {n / elapsed_s:.0f} checks/s"
    )


def _rows(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    single = args.answer is not None or args.completion is not None
    if single and args.input:
        raise GrpoError("give INPUT.jsonl or --answer/--completion, not both")
    if single:
        if args.answer is None or args.completion is None:
            raise GrpoError("--answer and --completion go together: grpo verify --answer 18 --completion 'FINAL: 18'")
        return [args.completion], [args.answer]
    if not args.input:
        raise GrpoError("nothing to verify: give INPUT.jsonl, or --answer A --completion C")
    return _read_jsonl(Path(args.input), args.completion_field, args.answer_field)


def _read_jsonl(path: Path, completion_field: str, answer_field: str) -> tuple[list[str], list[str]]:
    if not path.is_file():
        raise GrpoError(f"{path}: cannot read (No such file or directory)")
    completions, answers = [], []
    for where, row in jsonl_rows(path):
        for field, flag in ((completion_field, "--completion-field"), (answer_field, "--answer-field")):
            if field not in row:
                raise GrpoError(f"{where}: no field {field!r}; name the field with {flag}")
        completions.append(str(row[completion_field]))
        answers.append(row[answer_field] if isinstance(row[answer_field], str) else json.dumps(row[answer_field]))
    if not completions:
        raise GrpoError(f"{path}: no rows")
    return completions, answers
