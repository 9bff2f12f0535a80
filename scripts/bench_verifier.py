"""Verifier throughput and worst-case latency.

    .venv/bin/python scripts/bench_verifier.py               # every case
    .venv/bin/python scripts/bench_verifier.py --checks 256  # the first 256 of each kind: a smoke run

Throughput: checks/s with 1 and 2 workers, in batches of 128 completions (16 prompts x G=8).
Numeric: the 1,319 GSM8K reference solutions, each against its `#### N` answer and against N+1
(extract=gsm8k, then auto). LaTeX: \\boxed{} answers in equivalent and wrong forms (fractions, roots, pi,
powers, intervals) against LaTeX references (extract=boxed). Mixed: the labelled MATH-style outputs of
tests/data/math_outputs_labelled.jsonl (matrices, intervals, sets, units, text; extract=auto).
Targets: >= 2,000 numeric checks/s and >= 500 LaTeX checks/s with 2 workers.

Latency: each labelled output and each adversarial input (power towers, 10,000!, deep nesting, 5,000
characters of LaTeX, long lists, unit bait) scored alone, wall clock from the parent, against
timeout_s = 1. Target: no check over 2 x timeout_s (the pool kills a worker at 1.5 x).
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
LABELLED = Path(__file__).resolve().parents[1] / "tests" / "data" / "math_outputs_labelled.jsonl"
BATCH = 128
NUMERIC_TARGET = 2000
LATEX_TARGET = 500
TIMEOUT_S = 1.0
ADVERSARIAL = [
    (r"\boxed{7^{7^{7^{7}}}}", "2"),
    (r"\boxed{9^9^9^9}", "2"),
    (r"\boxed{10000!}", "2"),
    (r"\boxed{\frac{1}{2006!}}", r"\frac{1}{2004!}"),
    (r"\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}", "1"),
    (r"\boxed{" + "(" * 45 + "x" + ")" * 45 + "}", "x"),
    (r"\boxed{" + "+".join(f"x^{{{i}}}" for i in range(400)) + "}", "x"),
    (r"\boxed{" + ", ".join(str(i) for i in range(2000)) + "}", ", ".join(str(i) for i in range(2000))),
    (r"\boxed{" + r"\sqrt{" * 40 + "2" + "}" * 40 + "}", "1"),
    (r"\boxed{\sin^{2}(x)+\cos^{2}(x)+\tan(x)^{50}}", "1"),
    (r"\boxed{\begin{pmatrix}" + r" \\ ".join(" & ".join(str(i * j) for j in range(20)) for i in range(20)) + r"\end{pmatrix}}", "1"),
    ("FINAL: 5 " + "km/" * 200 + "h", "5 m/s"),
    ("FINAL: 1.45 kilograms per cubic meter per second", "1450 g"),
    ("\\(" * 5000 + " 7", "7"),
    ("The values are " + ", ".join(["1"] * 5000) + ".", "1"),
    ("$ a" + " " * 100_000, "1"),
    ("Final Answer: The " + "largest " * 5000 + "$n$ is 34.", "34"),
]


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
    """(checks/s, accuracy) over batches of BATCH, after one warm-up batch. One pass only: a second would
    find its answers in the workers' parse caches."""
    with build_verifier(VerifierConfig(extract=extract, timeout_s=TIMEOUT_S, num_workers=workers)) as verifier:
        verifier.score(completions[:BATCH], answers[:BATCH])
        start = time.perf_counter()
        correct = 0
        for i in range(0, len(completions), BATCH):
            correct += sum(s.correct for s in verifier.score(completions[i : i + BATCH], answers[i : i + BATCH]))
        return len(completions) / (time.perf_counter() - start), correct / len(completions)


def labelled_cases() -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in LABELLED.read_text().splitlines()]
    return [row["completion"] for row in rows], [row["answer"] for row in rows]


def latencies(completions: list[str], answers: list[str]) -> tuple[list[float], list[str]]:
    """(wall-clock seconds, reason) of each check scored alone on a 1-worker pool (auto extraction)."""
    seconds, reasons = [], []
    with build_verifier(VerifierConfig(extract="auto", timeout_s=TIMEOUT_S, num_workers=1)) as verifier:
        verifier.score(completions[:1], answers[:1])
        for completion, answer in zip(completions, answers):
            start = time.perf_counter()
            [score] = verifier.score([completion], [answer])
            seconds.append(time.perf_counter() - start)
            reasons.append(score.reason)
    return seconds, reasons


def main() -> None:
    parser = argparse.ArgumentParser(description="verifier checks/s with 1 and 2 workers, and worst-case latency")
    parser.add_argument("--checks", type=int, metavar="N", help="only the first N checks of each kind (default: all)")
    args = parser.parse_args()
    cases = [
        ("numeric (GSM8K)", "gsm8k", numeric_cases()),
        ("numeric, auto", "auto", numeric_cases()),
        ("LaTeX", "boxed", latex_cases()),
        ("mixed (labelled)", "auto", labelled_cases()),
    ]
    targets = {"numeric (GSM8K)": NUMERIC_TARGET, "numeric, auto": NUMERIC_TARGET, "LaTeX": LATEX_TARGET}
    for name, extract, (completions, answers) in cases:
        completions, answers = completions[: args.checks], answers[: args.checks]
        rates = {}
        for workers in (1, 2):
            rates[workers], accuracy = checks_per_second(extract, workers, completions, answers)
            print(f"{name:16} {workers} worker{'s' if workers > 1 else ' '}: {rates[workers]:8.0f} checks/s  ({len(completions)} checks, {accuracy:.1%} correct)")
        print(f"{name:16} 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")
        if name in targets:
            print(f"{name:16} 2 workers / target {targets[name]}: {rates[2] / targets[name]:.2f}x")
    for name, (completions, answers) in [("labelled", labelled_cases()), ("adversarial", tuple(map(list, zip(*ADVERSARIAL))))]:
        seconds, reasons = latencies(completions[: args.checks], answers[: args.checks])
        ordered = sorted(seconds)
        p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        print(
            f"latency {name:12} {len(seconds)} checks alone: p50 {1000 * p50:.0f} ms, p99 {1000 * p99:.0f} ms, "
            f"max {1000 * ordered[-1]:.0f} ms = {ordered[-1] / TIMEOUT_S:.2f} x timeout_s (target < 2); "
            f"{reasons.count('timeout')} timeouts"
        )


if __name__ == "__main__":
    main()
