"""Does a predicted answer equal the reference? Exact, then numeric, then symbolic.

  1. exact: the cleaned texts are equal, ignoring case and spaces but one between two letters or digits
     ("Tuesday", "12.5 kg"; "2 1/4" is not "21/4").
  2. numeric: numbers are exact rationals. Two integers or terminating decimals must be equal
     (1450000 is not 1450001, 0 is not 0.0000001). When either value has no finite decimal expansion
     (1/3, \\pi, \\sqrt{2}, 1/2004!) the other is taken as an approximation of it: equal when
     |pred - ref| <= rel_tol * max(|pred|, |ref|), so 0.3333333 matches 1/3 and 3.14 is not \\pi.
     No absolute tolerance: 1/2004! is not 1/2006!. Constant expressions are evaluated to 30 digits.
     Percent: "X%" reads as X/100 or as X when only one side carries a percent sign (50% matches 0.5
     and 50); 0.5 never matches 50.
     Units (units.py, pint): two units of the same dimension are converted and equal within rel_tol
     (1.45 kg is 1450 g); units of different dimensions never match (3.5 kg is not 3.5 m); words that
     are no unit ("12 boxes") are dropped; a number without a unit is read in the other side's unit.
  3. multiple choice: "(C) 12" against "(C) 12" needs letter and value, against "C" the letter, against
     "12" the value. Matrices: the same shape and each entry equal by the rules above; a one-row or one-column matrix
     is also the tuple (or bracketed list) of its entries. Named values ("x = 5", "\\sin(x) = 0.5"): when both
     sides name theirs the names must agree (\\sin(x) is not \\cos(x)); a bare value matches any name.
  4. symbolic: expressions with variables, sets, intervals and equations go to math-verify's verify
     (sympy simplification), which is only asked once the numeric rules above could not decide.
A list never matches a single value (a one-element answer never matches a two-element one); two lists match
as sets (each item of one equals an item of the other: math-verify's sets, so a repeated tuple counts once);
bracketed items keep order and must use the same brackets: (0,9) is not [0,9); a bare list against a tuple
compares in order ("1, 3" is (1, 3), not (3, 1)); tuples of named values compare name by name, in any order
(a_3 = 2, a_{37} = 19 is a_{37} = 19, a_3 = 2).
Two equations are equal up to rearrangement and scaling (3x-6y+2=0 is y=x/2+1/3): lhs - rhs of one is a
nonzero constant times the other's. An equation against an expression goes to math-verify, which compares
"y = 2x+1" with 2x+1 by its right side.
"""

from __future__ import annotations

import logging
from fractions import Fraction

from math_verify import verify
from sympy import Basic, Equality, Expr, Pow, Rational, cancel, preorder_traversal

from grpo_cli.verifier.normalize import Answer, Choice, Expression, Items, Labelled, Matrix, Number, Text, clean, squash

# math-verify warns on every call made without its own timeout; our worker pool enforces verifier.timeout_s.
logging.getLogger("math_verify").setLevel(logging.ERROR)

DIGITS = 30  # evalf precision for constant expressions
MAX_EXACT = 10**1000  # rational expressions up to this size are evaluated exactly (towers beyond it are not)
MAX_EXPONENT = 10**6  # a power whose exponent is larger (10^10^10^10) is not evaluated: evalf would run for minutes


def texts_match(pred: str, gold: str) -> bool:
    return squash(clean(pred)) == squash(clean(gold))


def answers_match(pred: Answer, gold: Answer, rel_tol: float) -> bool:
    if isinstance(pred, Labelled) and isinstance(gold, Labelled) and pred.label != gold.label:
        return False
    if isinstance(pred, Labelled) or isinstance(gold, Labelled):
        return answers_match(_unlabelled(pred), _unlabelled(gold), rel_tol)
    if isinstance(pred, Choice) or isinstance(gold, Choice):
        return _choices_match(pred, gold, rel_tol)
    if isinstance(pred, Matrix) or isinstance(gold, Matrix):
        return _matrices_match(pred, gold, rel_tol)
    if isinstance(pred, Items) or isinstance(gold, Items):
        return isinstance(pred, Items) and isinstance(gold, Items) and _items_match(pred, gold, rel_tol)
    if isinstance(pred, Text) or isinstance(gold, Text):
        return pred == gold
    if pred.unit and gold.unit and pred.unit != gold.unit:
        from grpo_cli.verifier.units import scale_between  # pint only for two different unit words

        scale = scale_between(pred.unit, gold.unit)
        if scale is None:
            return False
        if scale != 1:
            return any(_converted_match(p, scale, g, rel_tol) for p, g in _readings(pred, gold))
    return any(_values_match(p, g, rel_tol) for p, g in _readings(pred, gold))


def _unlabelled(answer: Answer) -> Answer:
    return answer.value if isinstance(answer, Labelled) else answer


def _converted_match(pred: Fraction | Basic, scale: Fraction, gold: Fraction | Basic, rel_tol: float) -> bool:
    """pred x scale against gold within rel_tol, whatever their decimal expansions."""
    if isinstance(pred, Fraction) and isinstance(gold, Fraction):
        return _close(pred * scale, gold, Fraction(rel_tol))
    return _expressions_match(_as_sympy(pred) * _as_sympy(scale), _as_sympy(gold), rel_tol)


def _readings(pred: Answer, gold: Answer) -> list[tuple]:
    """Pairs of values to compare; a percent sign on one side only allows X/100 and X for that side."""
    def values(answer: Number | Expression, other: Answer) -> list:
        if isinstance(answer, Expression):
            return [answer.expr]
        alone = answer.percent and not (isinstance(other, Number) and other.percent)
        return [answer.value / 100, answer.value] if alone else [answer.value]
    return [(p, g) for p in values(pred, gold) for g in values(gold, pred)]


def _values_match(pred: Fraction | Basic, gold: Fraction | Basic, rel_tol: float) -> bool:
    pred, gold = _as_fraction(pred), _as_fraction(gold)
    if isinstance(pred, Fraction) and isinstance(gold, Fraction):
        if terminates(pred) and terminates(gold):
            return pred == gold
        return _close(pred, gold, Fraction(rel_tol))
    return _expressions_match(_as_sympy(pred), _as_sympy(gold), rel_tol)


def terminates(value: Fraction) -> bool:
    """Whether the decimal expansion is finite: the denominator has no prime factor but 2 and 5."""
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    return denominator == 1


def _as_fraction(value: Fraction | Basic) -> Fraction | Basic:
    return Fraction(int(value.p), int(value.q)) if isinstance(value, Rational) else value


def _as_sympy(value: Fraction | Basic) -> Basic:
    return Rational(value.numerator, value.denominator) if isinstance(value, Fraction) else value


def _close(a, b, rel_tol) -> bool:
    return a == b or abs(a - b) <= rel_tol * max(abs(a), abs(b))


def _expressions_match(pred: Basic, gold: Basic, rel_tol: float) -> bool:
    """At least one side is not a rational number: irrational constants, or symbolic answers."""
    if pred == gold:
        return True
    if _astronomical(pred) or _astronomical(gold):
        return False  # not a number anyone meant, and sympy would take minutes to compare it
    if isinstance(pred, Expr) and isinstance(gold, Expr) and pred.is_number and gold.is_number:
        try:
            p, g = pred.evalf(DIGITS), gold.evalf(DIGITS)
        except OverflowError:  # a power tower past what mpmath can hold: not a number anyone meant
            return False
        if not (p.is_finite and g.is_finite):
            return False
        if pred.is_rational and gold.is_rational and max(abs(p), abs(g)) < MAX_EXACT:
            exact_pred, exact_gold = pred.doit(), gold.doit()  # 2^{20}, 1/2004!: rationals in disguise
            if isinstance(exact_pred, Rational) and isinstance(exact_gold, Rational):
                return _values_match(exact_pred, exact_gold, rel_tol)
        return bool(_close(p, g, rel_tol))
    if isinstance(pred, Equality) and isinstance(gold, Equality):
        return _equations_match(pred, gold)
    return verify(gold, pred, timeout_seconds=None)


def _equations_match(pred: Equality, gold: Equality) -> bool:
    """Equal up to rearrangement and scaling: (lhs - rhs) of one is a nonzero constant times the other's.
    math-verify agrees but needs about half a second a pair, close to the default timeout."""
    pred_zero, gold_zero = pred.lhs - pred.rhs, gold.lhs - gold.rhs
    if pred_zero == 0 or gold_zero == 0:
        return False
    ratio = cancel(pred_zero / gold_zero)
    return bool(ratio.is_number and ratio.is_finite and ratio != 0)


def _choices_match(pred: Answer, gold: Answer, rel_tol: float) -> bool:
    """ "(C) 12" against "C" or "(C) 13" compares letters, against "12" values; a letter is never a value."""
    if isinstance(pred, Choice) and isinstance(gold, Choice):
        return pred.letter == gold.letter and (pred.value is None or gold.value is None or answers_match(pred.value, gold.value, rel_tol))
    if isinstance(pred, Choice):
        return pred.value is not None and answers_match(pred.value, gold, rel_tol)
    return gold.value is not None and answers_match(pred, gold.value, rel_tol)


def _matrices_match(pred: Answer, gold: Answer, rel_tol: float) -> bool:
    pred_entries, gold_entries = _grid(pred), _grid(gold)
    if pred_entries is None or gold_entries is None or pred_entries[0] != gold_entries[0]:
        return False
    return all(answers_match(p, g, rel_tol) for p, g in zip(pred_entries[1], gold_entries[1]))


def _grid(answer: Answer) -> tuple[tuple[int, int] | str, tuple[Answer, ...]] | None:
    """(shape, entries row by row); a vector (one row, one column, a tuple or a bracketed list) has shape
    "vector"; a list of equally long lists ([[1, 2], [3, 4]]) is a matrix."""
    if isinstance(answer, Items) and answer.brackets in ("()", "[]"):
        rows = answer.items
        if len(rows) > 1 and all(isinstance(row, Items) and row.brackets == answer.brackets for row in rows):
            if len({len(row.items) for row in rows}) != 1:
                return None
            entries = tuple(entry for row in rows for entry in row.items)
            return ("vector" if len(rows[0].items) == 1 else (len(rows), len(rows[0].items))), entries
        return "vector", answer.items
    if not isinstance(answer, Matrix):
        return None
    entries = tuple(entry for row in answer.rows for entry in row)
    vector = len(answer.rows) == 1 or len(answer.rows[0]) == 1
    return ("vector" if vector else (len(answer.rows), len(answer.rows[0]))), entries


def _astronomical(expr: Expr) -> bool:
    """Whether a power in `expr` has an exponent beyond MAX_EXPONENT, judged from the exponent's own powers
    without evaluating them (10^{10^{10}} is too large, 2^{10} is not)."""
    return any(isinstance(node, Pow) and _exceeds(node.exp, MAX_EXPONENT) for node in preorder_traversal(expr))


def _exceeds(expr: Basic, bound: int) -> bool:
    """|expr| > bound for a rational, or a power of rationals whose size bound^(1/exponent) decides; False otherwise."""
    if isinstance(expr, Rational):
        return abs(expr) > bound
    if isinstance(expr, Pow) and isinstance(expr.base, Rational) and abs(expr.base) > 1:
        # base^e > bound  <=>  e > log(bound) / log(base); compare e against a small rational bound instead.
        return _exceeds(expr.exp, max(1, int(bound).bit_length() // max(1, int(abs(expr.base)).bit_length() - 1)))
    return False


def _items_match(pred: Items, gold: Items, rel_tol: float) -> bool:
    pred_names, gold_names = _names(pred), _names(gold)
    if pred_names and gold_names:
        return pred_names.keys() == gold_names.keys() and all(answers_match(pred_names[n], gold_names[n], rel_tol) for n in gold_names)
    unordered = {"", "{}"}
    if pred.brackets in unordered and gold.brackets in unordered:
        return _same_set(pred.items, gold.items, rel_tol)
    if len(pred.items) != len(gold.items):
        return False
    in_order = pred.brackets == gold.brackets or {pred.brackets, gold.brackets} == {"", "()"}
    return in_order and all(answers_match(p, g, rel_tol) for p, g in zip(pred.items, gold.items))


def _names(items: Items) -> dict[str, Answer] | None:
    """name -> value when every item is named and no name repeats (x=2, y=3), else None."""
    names = {item.label: item.value for item in items.items if isinstance(item, Labelled)}
    return names if len(names) == len(items.items) else None


def _same_set(pred: tuple[Answer, ...], gold: tuple[Answer, ...], rel_tol: float) -> bool:
    """Every item of each side equals an item of the other. Items written alike are paired first, so two
    long equal lists cost a hash lookup per item, not a comparison per pair."""
    try:
        pred_seen, gold_seen = set(pred), set(gold)
    except TypeError:  # an unhashable sympy object (a mutable matrix) among the items
        pred_seen, gold_seen = set(), set()
    pred_left = [p for p in pred if p not in gold_seen]
    gold_left = [g for g in gold if g not in pred_seen]
    return all(any(answers_match(p, g, rel_tol) for g in gold) for p in pred_left) and all(
        any(answers_match(p, g, rel_tol) for p in pred) for g in gold_left
    )
