"""The reward edge-case battery: hostile completions scored by the configured verifier and reward functions.

`grpo verify --edge-cases` prints it as a table; `grpo train` runs it at start-up and refuses to start when
a reward function (verifier.rewards.custom) fails a case. A batch-form function gets each case as a batch of
one, with the prompt and columns of a training example when one is given. Each case runs in the verifier's worker processes
under verifier.timeout_s, as training would run it, and passes when

  - neither the built-in check nor a reward function failed, and the check finished within the timeout;
  - the reward is a finite number;
  - the completion is scored correct exactly when it is the right answer (the control case, and the answer
    on the wrong line under verifier.extract=last_number, which reads the last number wherever it is).

The cases follow the verifier: the answer sits where verifier.extract looks for it (after verifier.marker,
in \\boxed{}, after ####, ...), or in a fenced Python block for verifier.name=code.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from grpo_cli.config import VerifierConfig
from grpo_cli.data import Example
from grpo_cli.errors import GrpoError
from grpo_cli.verifier import WORKER_MODULES, check_setup
from grpo_cli.verifier.pool import WorkerPool
from grpo_cli.verifier.rewards import (
    RewardFailure, RewardFunctionError, Scorer, batch_arguments, call_batched, compose, with_batch_rewards,
)
from grpo_cli.verifier.score import Score

MATH_ANSWER, MATH_RIGHT, MATH_WRONG = "42", "42", "41"
CODE_ANSWER = '{"tests": ["assert add(2, 3) == 5"]}'
CODE_RIGHT = "def add(a, b):\n    return a + b"
CODE_WRONG = "def add(a, b):\n    return a - b"
CONTROL_CHARACTERS = "".join(map(chr, range(32))) + "\x7f\x80\x9f\ufeff\u200b\u202e"
# Bytes that are not UTF-8, as Python holds them (lone surrogates), and one unpaired surrogate.
INVALID_UTF8 = b"\xff\xfe4\xc3\x28".decode("utf-8", "surrogateescape") + "\ud800"
NESTING = 10_000
ONE_MB = 1_000_000


@dataclass(frozen=True)
class EdgeCase:
    name: str
    completion: str
    right: bool = False  # the genuinely right answer: must be scored correct; every other case must not be


@dataclass(frozen=True)
class Outcome:
    case: str
    reward: float
    reason: str  # the score's reason, or what went wrong
    ms: float
    failure: str | None  # None when the case passed
    custom_raised: bool = False  # the failure is a reward function's

    @property
    def passed(self) -> bool:
        return self.failure is None


def edge_cases(cfg: VerifierConfig) -> tuple[str, list[EdgeCase]]:
    """(reference answer, cases) for the verifier `cfg` describes."""
    code = cfg.name == "code"
    right, wrong = (CODE_RIGHT, CODE_WRONG) if code else (MATH_RIGHT, MATH_WRONG)

    def answer(text: str) -> str:
        """`text` where the verifier reads the answer."""
        if code:
            return f"```python\n{text}\n```"
        return {
            "final_line": f"{cfg.marker} {text}", "gsm8k": f"#### {text}", "boxed": f"\\boxed{{{text}}}",
            "answer_is": f"The answer is {text}.", "last_number": text, "auto": f"\\boxed{{{text}}}",
        }[cfg.extract]

    marker = "```python" if code else {"gsm8k": "####", "boxed": "\\boxed{}", "answer_is": "The answer is"}.get(cfg.extract, cfg.marker)
    rambling = "The crate holds 17 boxes; 3 of them weigh 2.5 kg each, so I keep counting. "
    cases = [
        EdgeCase("right answer", f"Working it out step by step.\n{answer(right)}", right=True),
        EdgeCase("empty", ""),
        EdgeCase("whitespace only", " \t\n\r\n \u00a0\u2003\n"),
        EdgeCase("1 MB of text", (rambling * (ONE_MB // len(rambling) + 1))[:ONE_MB]),
        EdgeCase("only a marker", marker),
        EdgeCase("marker with nothing after it", f"Let me think.\n{answer('')}\n"),
        EdgeCase("control characters", answer(CONTROL_CHARACTERS)),
        EdgeCase("invalid UTF-8 (surrogates)", answer(INVALID_UTF8)),
        EdgeCase("malformed JSON", answer('{"answer": "forty-two", "steps": [1, 2,')),
        EdgeCase("divides by zero", answer("1/0")),
        EdgeCase("overflows", answer("10^10^10^10")),
        EdgeCase(f"nested LaTeX {NESTING:,} deep", answer("\\frac{1}{" * NESTING + "2" + "}" * NESTING)),
        EdgeCase(
            "answer on the wrong line", f"{answer(wrong)}\n{right}", right=not code and cfg.extract == "last_number"
        ),
    ]
    return (CODE_ANSWER if code else MATH_ANSWER), cases


class _Probe:
    """Scores one case in a worker as Scorer does, timing it and saying which part raised."""

    def __init__(self, cfg: VerifierConfig, example: Example | None):
        self.scorer = Scorer(cfg)
        self.example = example or Example("", "", "")

    def __call__(self, completion: str, answer: str) -> tuple[Score | None, str | None, float, bool]:
        """(score, None, ms, False), or (None, what raised, ms, whether it was a reward function)."""
        cfg = self.scorer.cfg
        start = time.perf_counter()
        try:
            check = self.scorer.check(completion, answer, "train")
        except Exception as exc:
            return None, f"the {cfg.name} verifier raised {type(exc).__name__}: {exc}", _ms(start), False
        functions = self.scorer.functions()
        try:
            score = compose(check, completion, answer, 0, cfg.rewards, functions)
        except RewardFunctionError as exc:
            return None, str(exc), _ms(start), True
        for function in (f for f in functions if f.batched):
            arguments = batch_arguments([completion], [self.example.question], [self.example.columns], [[]], 0)
            values = call_batched(function, arguments)
            if isinstance(values, RewardFailure):
                return None, f"{function.path} {values.problem}", _ms(start), True
            [score] = with_batch_rewards([score], function, values)
        return score, None, _ms(start), False


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def run_edge_cases(cfg: VerifierConfig, example: Example | None = None) -> list[Outcome]:
    """Score every case on cfg.num_workers workers under cfg.timeout_s; one Outcome per case, in order.
    `example`: the prompt and columns batch-form reward functions get (none: an empty prompt, no columns)."""
    check_setup(cfg)
    answer, cases = edge_cases(cfg)
    pool = WorkerPool(_Probe(cfg, example), cfg.num_workers, cfg.timeout_s, soft_timeout=cfg.name == "math", preload=WORKER_MODULES)
    try:
        results = pool.map([(case.completion, answer) for case in cases])
    finally:
        pool.close()
    return [_judge(case, result, cfg) for case, result in zip(cases, results)]


def _judge(case: EdgeCase, result: tuple | Score, cfg: VerifierConfig) -> Outcome:
    if isinstance(result, Score):  # the pool's verdict: the worker was stopped or died
        what = f"no result within verifier.timeout_s={cfg.timeout_s:g}" if result.reason == "timeout" else "the worker process died"
        return Outcome(case.name, 0.0, result.reason, math.nan, what)
    score, raised, ms, custom_raised = result
    if score is None:
        return Outcome(case.name, 0.0, "error", ms, raised, custom_raised)
    failure = None
    if not math.isfinite(score.reward):
        failure = f"reward {score.reward} is not finite"
    elif score.correct != case.right:
        failure = "scored correct" if score.correct else f"the right answer scored {score.reason}"
    return Outcome(case.name, score.reward, score.reason, ms, failure)


def format_table(outcomes: list[Outcome]) -> str:
    """case, reward, reason, ms and, for a failed case, what went wrong; plain text, one line per case."""
    width = max(len(o.case) for o in outcomes)
    lines = [f"{'case':<{width}}  {'reward':>7}  {'reason':<9}  {'ms':>7}"]
    for o in outcomes:
        ms = "-" if math.isnan(o.ms) else f"{o.ms:.1f}"
        line = f"{o.case:<{width}}  {o.reward:>7.3f}  {o.reason:<9}  {ms:>7}"
        lines.append(line + (f"  FAILED: {o.failure}" if o.failure else ""))
    return "\n".join(lines)


def failures_line(outcomes: list[Outcome]) -> str | None:
    """One line naming every failed case, or None when all passed."""
    failed = [o for o in outcomes if not o.passed]
    if not failed:
        return None
    return f"{len(failed)} of {len(outcomes)} edge cases failed: " + "; ".join(f"{o.case}: {o.failure}" for o in failed)


def check_at_start(cfg: VerifierConfig, example: Example | None = None) -> list[str]:
    """`grpo train`'s start-up run of the battery (run_edge_cases): GrpoError naming the case when a reward
    function fails one; otherwise warning lines for the cases the built-in verifier failed (none, when it works)."""
    outcomes = run_edge_cases(cfg, example)
    crashed = [o for o in outcomes if o.custom_raised]
    if crashed:
        raise GrpoError(
            f"verifier.rewards.custom crashed on the edge case '{crashed[0].case}': {crashed[0].failure}. Make it "
            "return a number for every completion (0, or None in TRL's form, for unusable ones); `grpo verify --edge-cases` "
            "lists all cases"
        )
    failed = failures_line(outcomes)
    return [f"{failed}; see `grpo verify --edge-cases`"] if failed else []
