"""Imported once by the forkserver that forks the verifier's workers (verifier.WORKER_MODULES).

sympy, latex2sympy and math-verify build parsers and caches on first use: 0.1-0.5 s for each kind of answer,
longer than a tight verifier.timeout_s (the demo's 0.2 s). Scoring one answer of each kind here, before any
worker is forked, makes every worker start warm instead of timing out on its first fraction or expression.
"""

from grpo_cli.config import VerifierConfig
from grpo_cli.verifier.math_check import check_math

for text, reference in (("1/0", "42"), ("\\frac{1}{2}", "42"), ("10^10^10^10", "42"), ('{"answer": [1,', "42"), ("x + 1", "x + 2")):
    check_math(f"FINAL: {text}", reference, VerifierConfig(extract="final_line"))
