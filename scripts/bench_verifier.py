"""Verifier throughput: checks/s with 1 and 2 workers, in batches of 128 completions (16 prompts x G=8).

    .venv/bin/python scripts/bench_verifier.py               # every case
    .venv/bin/python scripts/bench_verifier.py --checks 256  # the first 256 of each kind: a smoke run

Numeric: the 1,319 GSM8K reference solutions, each against its `#### N` answer and against N+1
(extract=gsm8k). LaTeX: \\boxed{} answers in equivalent and wrong forms (fractions, roots, pi, powers,
intervals) against LaTeX references (extract=boxed). Target: >= 2,000 numeric checks/s with 2 workers.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from grpo_cli.config import VerifierConfig
from grpo_cli.verifier import build_verifier

GSM8K_TEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k" / "test.jsonl"
BATCH = 128
NUMERIC_TARGET = 2000


def numeric_cases() -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in GSM8K_TEST.read_text().splitlines()]
    answers = [row["answer"].rsplit("####", 1)[1].strip().replace(",", "") for row in rows]
    # Each solution against its answer, then against the next integer: any prefix holds both kinds.
    completions = [row["answer"] for row in rows for _ in range(2)]
    return completions, [checked for a in answers for checked in (a, str(int(a) + 1))]


def latex_cases(n: int = 2000, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    completions, answers = [], []
    for _ in range(n):
        a, b, k = rng.randint(1, 40), rng.randint(2, 40), rng.randint(2, 9)
        reference, predicted = rng.choice([
            (rf"\frac{{{a}}}{{{b}}}", rng.choice([rf"\dfrac{{{a * k}}}{{{b * k}}}", f"{a}/{b}", rf"\frac{{{a + 1}}}{{{b}}}"])),
            (rf"{k}\sqrt{{{a}}}", rng.choice([rf"\sqrt{{{k * k * a}}}", rf"{k + 1}\sqrt{{{a}}}"])),
            (rf"\frac{{{a}\pi}}{{{b}}}", rng.choice([rf"\frac{{{a}}}{{{b}}}\pi", rf"{a}\pi/{b}", rf"\frac{{{a}\pi}}{{{b + 1}}}"])),
            (rf"{k}^{{{a % 12}}}", rng.choice([str(k ** (a % 12)), str(k ** (a % 12) + 1)])),
            (rf"\left({a}, {a + b}\right]", rng.choice([f"({a},{a + b}]", f"[{a},{a + b}]"])),
        ])
        completions.append(rf"Working it through, the result is $\boxed{{{predicted}}}$.")
        answers.append(reference)
    return completions, answers


def checks_per_second(extract: str, workers: int, completions: list[str], answers: list[str]) -> tuple[float, float]:
    """(checks/s, accuracy) over batches of BATCH, after one warm-up batch."""
    with build_verifier(VerifierConfig(extract=extract, timeout_s=1.0, num_workers=workers)) as verifier:
        verifier.score(completions[:BATCH], answers[:BATCH])
        start = time.perf_counter()
        correct = 0
        for i in range(0, len(completions), BATCH):
            correct += sum(s.correct for s in verifier.score(completions[i : i + BATCH], answers[i : i + BATCH]))
        return len(completions) / (time.perf_counter() - start), correct / len(completions)


def main() -> None:
    parser = argparse.ArgumentParser(description="verifier checks/s with 1 and 2 workers")
    parser.add_argument("--checks", type=int, metavar="N", help="time only the first N checks of each kind (default: all)")
    args = parser.parse_args()
    for name, extract, (completions, answers) in [("numeric (GSM8K)", "gsm8k", numeric_cases()), ("LaTeX", "boxed", latex_cases())]:
        completions, answers = completions[: args.checks], answers[: args.checks]
        rates = {}
        for workers in (1, 2):
            rates[workers], accuracy = checks_per_second(extract, workers, completions, answers)
            print(f"{name:16} {workers} worker{'s' if workers > 1 else ' '}: {rates[workers]:8.0f} checks/s  ({len(completions)} checks, {accuracy:.1%} correct)")
        print(f"{name:16} 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")
        if extract == "gsm8k":
            print(f"{name:16} 2 workers / target {NUMERIC_TARGET}: {rates[2] / NUMERIC_TARGET:.2f}x")


if __name__ == "__main__":
    main()
