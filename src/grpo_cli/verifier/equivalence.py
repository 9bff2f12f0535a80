"""Does a predicted answer equal the reference? Exact, then numeric, then symbolic.

  1. exact: the cleaned texts are equal, ignoring case and spaces ("Tuesday", "12.5 kg").
  2. numeric: numbers are exact rationals, equal when |pred - ref| <= rel_tol * max(|pred|, |ref|).
     No absolute tolerance: 1/2004! is not 1/2006!, and 0 is only 0. Percent: "X%" reads as X/100 or
     as X when only one side carries a percent sign (50% matches 0.5 and 50); 0.5 never matches 50.
     Constant expressions (\\pi, \\sqrt{2}, 2^{10}) are evaluated to 30 digits under the same rule.
  3. symbolic: expressions with variables, sets, intervals and equations go to math-verify's verify
     (sympy simplification), which is only asked once the numeric rules above could not decide.
Lists must have the same length (a one-element answer never matches a two-element one) and match as
multisets; bracketed items keep order and must use the same brackets: (0,9) is not [0,9).
"""

from __future__ import annotations

import re
from fractions import Fraction

from math_verify import verify
from sympy import Basic, Expr, Rational

from grpo_cli.verifier.normalize import Answer, Expression, Items, Number, Text, clean

DIGITS = 30  # evalf precision for constant expressions


def texts_match(pred: str, gold: str) -> bool:
    return _squash(clean(pred)) == _squash(clean(gold))


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def answers_match(pred: Answer, gold: Answer, rel_tol: float) -> bool:
    if isinstance(pred, Items) or isinstance(gold, Items):
        return isinstance(pred, Items) and isinstance(gold, Items) and _items_match(pred, gold, rel_tol)
    if isinstance(pred, Text) or isinstance(gold, Text):
        return pred == gold
    if isinstance(pred, Number) and isinstance(gold, Number):
        return any(_close(p, g, Fraction(rel_tol)) for p, g in _readings(pred, gold))
    if isinstance(pred, Number) or isinstance(gold, Number):
        return any(_expressions_match(_sympy(p), _sympy(g), rel_tol) for p, g in _readings(pred, gold))
    return _expressions_match(pred.expr, gold.expr, rel_tol)


def _readings(pred: Answer, gold: Answer) -> list[tuple]:
    """Pairs of values to compare; a percent sign on one side only allows X/100 and X for that side."""
    def values(answer: Answer, other: Answer) -> list:
        if isinstance(answer, Number):
            alone = answer.percent and not (isinstance(other, Number) and other.percent)
            return [answer.value / 100, answer.value] if alone else [answer.value]
        return [answer.expr]
    return [(p, g) for p in values(pred, gold) for g in values(gold, pred)]


def _sympy(value) -> Basic:
    return Rational(value.numerator, value.denominator) if isinstance(value, Fraction) else value


def _close(a, b, rel_tol) -> bool:
    return a == b or abs(a - b) <= rel_tol * max(abs(a), abs(b))


def _expressions_match(pred: Basic, gold: Basic, rel_tol: float) -> bool:
    if pred == gold:
        return True
    if isinstance(pred, Expr) and isinstance(gold, Expr) and pred.is_number and gold.is_number:
        p, g = pred.evalf(DIGITS), gold.evalf(DIGITS)
        if not (p.is_finite and g.is_finite):
            return False
        return bool(_close(p, g, rel_tol))
    return verify(gold, pred, timeout_seconds=None)


def _items_match(pred: Items, gold: Items, rel_tol: float) -> bool:
    if len(pred.items) != len(gold.items):
        return False
    unordered = {"", "{}"}
    if pred.brackets in unordered and gold.brackets in unordered:
        unmatched = list(gold.items)
        for item in pred.items:
            twin = next((g for g in unmatched if answers_match(item, g, rel_tol)), None)
            if twin is None:
                return False
            unmatched.remove(twin)
        return True
    return pred.brackets == gold.brackets and all(answers_match(p, g, rel_tol) for p, g in zip(pred.items, gold.items))
