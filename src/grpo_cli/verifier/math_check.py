"""Math answers: extract the completion's answer, parse both sides, compare (see equivalence.py)."""

from __future__ import annotations

from functools import lru_cache

from grpo_cli.config import VerifierConfig
from grpo_cli.verifier.equivalence import answers_match, texts_match
from grpo_cli.verifier.extract import extract_answer
from grpo_cli.verifier.normalize import parse_answer
from grpo_cli.verifier.score import Check

# Answers come last: only a completion's last characters are searched, so a 1 MB ramble costs what 100 KB does.
MAX_COMPLETION_CHARS = 100_000


def check_math(completion: str, answer: str, cfg: VerifierConfig) -> Check:
    answer = reference_answer(answer, cfg.marker)
    gold = parse_answer(answer)
    if gold is None:
        raise ValueError("the reference answer is empty")
    extraction = extract_answer(completion[-MAX_COMPLETION_CHARS:], cfg.extract, cfg.marker)
    predicted = parse_answer(extraction.answer) if extraction else None
    if predicted is None:
        return Check(0.0, "no_answer")
    correct = texts_match(extraction.answer, answer) or answers_match(predicted, gold, cfg.rel_tol)
    return Check(float(correct), "correct" if correct else "wrong", extraction.answer, extraction.well_formed)


@lru_cache(maxsize=4096)  # the reference of a group is checked against each of its G completions
def reference_answer(answer: str, marker: str) -> str:
    """The reference's answer: its box or answer phrase when it is a worked solution (MATH's solutions end
    in \\boxed{}, as math-verify reads a gold), else all of it ("1331 and 1728" stays a list)."""
    found = extract_answer(answer, "auto", marker)
    return found.answer if found and found.well_formed else answer
