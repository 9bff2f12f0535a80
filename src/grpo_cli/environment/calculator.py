"""environment=calculator: exact arithmetic on numbers, + - * / // % ** and parentheses; no code runs.

The expression is parsed with Python's grammar (ast) and only number literals and those operators are
evaluated, in Fractions: 0.1 + 0.2 is exactly 0.3, 1/3 stays 1/3. A whole-number result prints as an integer,
one with a finite decimal expansion as a decimal, any other as p/q. Names, calls, attributes, strings and
comparisons are refused, as are powers whose result would be huge.
"""

from __future__ import annotations

import ast
import operator
from fractions import Fraction

from grpo_cli.environment.base import ToolEnvironment, ToolError

OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
MAX_RESULT_DIGITS = 1000


class CalculatorEnvironment(ToolEnvironment):
    name = "calculator"
    parameter = "expression"
    description = "Exact arithmetic: numbers with + - * / // % ** and parentheses, e.g. (12 + 30) / 4"

    def run(self, argument: str) -> str:
        return format_number(evaluate(argument))


def evaluate(expression: str) -> Fraction:
    """The exact value of an arithmetic expression; ToolError for anything else."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ToolError(f"cannot parse {expression.strip()!r}: write numbers with + - * / // % ** and parentheses") from None
    return _value(tree.body)


def _value(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(repr(node.value)) if isinstance(node.value, float) else Fraction(node.value)  # 0.1 is 1/10
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _value(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _power(_value(node.left), _value(node.right))
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        left, right = _value(node.left), _value(node.right)
        if right == 0 and not isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
            raise ToolError("division by zero")
        return OPERATORS[type(node.op)](left, right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise ToolError("^ is not a power here: write ** (2 ** 10)")
    raise ToolError(f"only numbers and + - * / // % ** are allowed, not {ast.unparse(node)!r}")


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise ToolError("a power needs a whole-number exponent (roots are not exact)")
    if base == 0 and exponent < 0:
        raise ToolError("division by zero")
    # Digits of the result ~ |exponent| x digits of the base: refuse before computing it.
    digits = max(len(str(base.numerator)), len(str(base.denominator)))
    if abs(base) not in (0, 1) and abs(exponent.numerator) * digits > MAX_RESULT_DIGITS:
        raise ToolError(f"the result would have more than {MAX_RESULT_DIGITS} digits")
    return base ** exponent.numerator


def format_number(value: Fraction) -> str:
    """42, 3.5, -0.125 or 1/3: a decimal when it is exact, p/q otherwise."""
    if value.denominator == 1:
        return str(value.numerator)
    denominator, twos, fives = value.denominator, 0, 0
    while denominator % 2 == 0:
        denominator, twos = denominator // 2, twos + 1
    while denominator % 5 == 0:
        denominator, fives = denominator // 5, fives + 1
    if denominator != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = abs(value.numerator) * 10**places // value.denominator
    sign = "-" if value < 0 else ""
    return f"{sign}{scaled // 10**places}.{scaled % 10**places:0{places}d}"
