"""Imported by the verifier's forkserver only (WORKER_MODULES): one math check of each kind, so that every
worker forks with the first-use costs already paid. A fresh process needs about 1 s for its first symbolic
check (sympy's lazy imports and caches, the LaTeX parser's tables) and half a second to build pint's unit
registry; inside a check, under the default verifier.timeout_s of 1 s, that is a timeout.
"""

from grpo_cli.config import VerifierConfig
from grpo_cli.verifier.math_check import check_math

WARM_UP = [
    (r"\boxed{(x+1)^2}", "x^2+2x+1"),  # math-verify's symbolic verify
    (r"\boxed{3x-6y+2=0}", r"y=\frac{1}{2}x+\frac{1}{3}"),  # equations
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}"),  # constants, evaluated
    (r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}", "(1, 2)"),  # matrices, tuples
    (r"\boxed{x \ge 1}", r"[1, \infty)"),  # intervals
    (r"\boxed{1 \le |x| \le 2}", r"[-2, -1] \cup [1, 2]"),  # an inequality sympy solves: imports its solvers
    (r"\boxed{S = \sum_{k=1}^{n} k}", r"S = \sum_{k=1}^{n} k"),  # sums: imports sympy's summation
    ("FINAL: 1.45 kg", "1450 g"),  # units: imports pint and builds its registry
    ("FINAL: 1/0", "42"),  # a parse that divides by zero
    ("FINAL: 10^10^10^10", "42"),  # a power tower, refused unevaluated
]

for completion, answer in WARM_UP:
    check_math(completion, answer, VerifierConfig(extract="auto"))
