"""Turn an answer's text into a value to compare: a Number (with its unit, if any), Items (a list, a
bracketed tuple, an interval or a set), a Matrix, an Expression (math-verify's LaTeX parser, on sympy)
or, when nothing parses, Text.

Both sides, the reference and the model's extracted answer, go through the same steps:
  1. clean: drop $...$, \\(...\\), \\boxed{}, \\text{}, **bold**, \\left/\\right, \\approx, a final period;
     thin spaces inside a number (4,\\!321 and 1\\,000) become thousands separators, other thin spaces
     and ~ are spaces; unicode minus -> "-", \\dfrac -> \\frac, "**" -> "^", and a^b^c means a^(b^c).
  2. number: sign, currency ($18.00, \\$18, €, £, ¥), thousands separators (2,125 and 1{,}000),
     decimals, repeating decimals (0.\\overline{3}), fractions (3/4, \\frac{3}{4}, \\frac34), mixed numbers (1 1/2, 1\\frac{1}{2}), scientific
     notation (1.5e3, 1.5\\times10^{3}), percent (25%, 25\\%, 25 percent), then the words after it
     ("3.5 kg", "12 boxes", "5 m"): kept as the number's unit, judged in equivalence.py (units.py).
  3. a multiple choice: "(C) 12" (\\textbf{(C)}\\ 12), "(C)", "C"; a matrix (pmatrix, bmatrix, array): its
     entries, row by row.
  4. inequalities are intervals: "1 \\le x \\le 4" is [1, 4], "x > 2" is (2, \\infty); "x \\in S" is S.
  5. items: "1331 and 1728", "1, 2; 3", "4, 9 or 16", "A \\cup B" is an unordered list; (a, b), [a, b),
     {a, b} keep their brackets. Assignments group into solutions: "x=2, y=3; x=3, y=2" is the list of
     tuples (2, 3), (3, 2); "x=2 or x=3" is the list 2, 3.
  6. "x = 5", "(a, b) = (4, 1)" and "x = 2 \\cdot 3 = 6" are their last side ("5 = 6" matches nothing);
     "y = 2x + 1", whose sides have a variable, stays an equation. "a \\pm b" is the list a + b, a - b.
  7. anything else is LaTeX for math-verify's parser (latex2sympy2_extended), else plain text; words after
     it are its unit, as for a number ("36\\pi cm^3"). Digits apart by a space ("12 3") are text: the
     parser would read 12*3.

Model text only meets regexes and a grammar parser here, never eval/exec (sympy's parse_expr evals).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Union

from latex2sympy2_extended.latex2sympy2 import NormalizationConfig, latex2sympy
from math_verify.grader import should_treat_as_complex
from sympy import Basic

from grpo_cli.verifier.extract import unbox


@dataclass(frozen=True)
class Number:
    value: Fraction  # as written: "25%" has value 25 and percent True
    percent: bool = False
    unit: str = ""  # the words after the number as written ("kg", "km/h", "boxes"); "" for none


@dataclass(frozen=True)
class Items:
    brackets: str  # "" for a bare list, else the open and close characters: "()", "[)", "{}"
    items: tuple["Answer", ...]


@dataclass(frozen=True)
class Matrix:
    rows: tuple[tuple["Answer", ...], ...]


@dataclass(frozen=True)
class Choice:
    letter: str  # "C" for "(C) 12", "(C)" or "C", the multiple-choice form of AMC answers
    value: "Answer | None"  # 12; None when only the letter is given


@dataclass(frozen=True)
class Expression:
    expr: Basic
    unit: str = ""  # words after it, as for a Number: "36\\pi cm^3"


@dataclass(frozen=True)
class Text:
    text: str


Answer = Union[Number, Items, Matrix, Choice, Expression, Text]

# The same LaTeX normalization math-verify's LatexExtractionConfig uses (units and \text{} dropped).
LATEX_NORMALIZATION = NormalizationConfig(
    basic_latex=True, units=True, malformed_operators=True, nits=True, boxed="all", equations=False
)
MAX_LATEX_CHARS = 1000  # longer answers are compared as text
MAX_NESTING = 50  # and so are answers with brackets nested deeper
MAX_EXPONENT = 1000  # 1e400 is a number; 1e99999999 is left to sympy, under the check's timeout
# "12 3" is two numbers, though LaTeX would typeset 123 and the parser reads 12*3; "\\log_2 3" is one.
SPACED_DIGITS = re.compile(r"(?<![\w^_\\])\d+\s+\d")


@lru_cache(maxsize=4096)
def parse_answer(text: str) -> Answer | None:
    """The comparable value of an answer's text; None when nothing is left after cleaning."""
    cleaned = clean(text)
    if not cleaned:
        return None
    # Parsing recurses into brackets, and the LaTeX parser needs a minute for 5,000 nested braces.
    return _text(cleaned) if _nesting(cleaned) > MAX_NESTING else _parse_clean(cleaned)


def _parse_clean(text: str) -> Answer:
    for parse in (parse_number, _choice, _matrix, _interval, _items, _equalities, _plus_minus, _expression_with_unit):
        answer = parse(text)
        if answer is not None:
            return answer
    return _latex(text)


def _latex(text: str) -> Expression | Text:
    # The LaTeX parser needs seconds for 5,000 characters.
    if len(text) > MAX_LATEX_CHARS or SPACED_DIGITS.search(text):
        return _text(text)
    try:
        return Expression(latex2sympy(text, is_real=not should_treat_as_complex(text), normalization_config=LATEX_NORMALIZATION))
    except Exception:  # the parser raises bare Exception on malformed LaTeX
        return _text(text)


def _text(text: str) -> Text:
    return Text(squash(text))


def squash(text: str) -> str:
    """Lower case without spaces, except one space between two letters or digits: "2 1/4" is not "21/4"."""
    return re.sub(r"\s+", _kept_space, text.strip().lower())


def _kept_space(space: re.Match) -> str:
    text, start, end = space.string, space.start(), space.end()
    return " " if start > 0 and end < len(text) and text[start - 1].isalnum() and text[end].isalnum() else ""


# ---- cleaning -------------------------------------------------------------------------------------

WRAPPERS = [re.compile(p, re.DOTALL) for p in (r"\$\$(.*)\$\$", r"\$(.*)\$", r"\\\((.*)\\\)", r"\\\[(.*)\\\]", r"\*\*(.*)\*\*", r"`(.*)`")]
TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}")
# 4,\!321  56,\!789  1\,000  1{,}000: a thin space or {,} before three digits separates thousands.
THOUSANDS_SPACING = re.compile(r"(?<=\d)(?:,?\s*\\[,!]\s*|\{,\}\s*)(?=\d{3}(?!\d))")
DROPPED = re.compile(r"\\left(?![a-zA-Z])|\\right(?![a-zA-Z])|\\displaystyle|\^\s*\{?\\circ\}?|°")
# Other thin spaces are spaces ("1\\,00" is 1 and 00); "\\\\ " (a matrix row break) is none.
THIN_SPACE = re.compile(r"(?<!\\)\\[,;:! ]")
APPROXIMATELY = re.compile(r"^\s*(?:\\approx|≈|\\sim)\s*")
POWER_CHAIN = re.compile(r"(?:\d+|[A-Za-z])(?:\^(?:\d+|[A-Za-z])){2,}")
REPLACEMENTS = {
    "\u2212": "-", "~": " ", "\u00a0": " ", "\u202f": " ", "\u2009": " ", "²": "^2", "³": "^3", "±": r"\pm ", "≤": r"\le ", "≥": r"\ge ",
    "\\dfrac": "\\frac", "\\tfrac": "\\frac", "\\%": "%", "\\$": "$", "\\{": "{", "\\}": "}",
}


@lru_cache(maxsize=4096)
def clean(text: str) -> str:
    """Strip presentation (wrappers, spacing, a final period) so equal answers have equal text."""
    text = text.strip()
    for old, new in REPLACEMENTS.items():
        text = text.replace(old, new)
    previous = None
    while text != previous:
        previous = text
        text = text.strip().rstrip(".").strip()
        for wrapper in WRAPPERS:
            match = wrapper.fullmatch(text)
            if match:
                text = match.group(1)
        text = unbox(text) or text
    text = APPROXIMATELY.sub("", TEXT_COMMAND.sub(r" \1 ", text))
    text = THOUSANDS_SPACING.sub(",", text)
    text = THIN_SPACE.sub(" ", DROPPED.sub("", text)).replace("**", "^")
    text = re.sub(r"\s+\^", "^", text)  # 5 \text{cm}^2 -> 5 cm^2
    text = POWER_CHAIN.sub(_right_associative, text)
    return re.sub(r"\s+", " ", text).strip().rstrip(".").strip()  # "5\\text{.}"


def _right_associative(chain: re.Match) -> str:
    """2^3^2 -> 2^{3^{2}}: a power tower is read from the top, 2^(3^2) = 512 (the LaTeX parser says 64)."""
    parts = chain.group(0).split("^")
    return "^{".join(parts) + "}" * (len(parts) - 1)


# ---- numbers --------------------------------------------------------------------------------------

MIXED = r"(?P<whole>\d+)(?:\s+(?P<num>\d+)/(?P<den>\d+)|\s*\\frac\{(?P<lnum>\d+)\}\{(?P<lden>\d+)\})"
FRACTION = r"(?P<fnum>\d+(?:\.\d+)?)/(?P<fden>\d+(?:\.\d+)?)|\\frac\{(?P<flnum>\d+(?:\.\d+)?)\}\{(?P<flden>\d+(?:\.\d+)?)\}|\\frac(?P<fsnum>\d)(?P<fsden>\d)"
SCIENTIFIC = r"(?P<mantissa>\d+(?:\.\d*)?|\.\d+)(?:[eE](?P<e>[-+]?\d+)|\s*(?:\\times|×|\\cdot)\s*10\^\{?(?P<p>[-+]?\d+)\}?)"
REPEATING = r"(?P<rwhole>\d*)\.(?P<rfixed>\d*)\\overline\{(?P<repeat>\d+)\}"  # 0.1\overline{6} = 1/6
DECIMAL = r"(?P<decimal>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d*)?|\.\d+)"
# A unit or word after a number: letters (no backslash: "\sqrt{2} \cdot x" is no unit), then no digit but
# in an exponent ("km/h", "cm^2", "m^{3}").
UNIT_WORD = r"[A-Za-z][^\s\d^\\]*(?:\^\{?-?\d\}?[^\s\d^\\]*)*"
# Words start with two letters ("kg", "boxes") or are one of m, g, s, h, L, so that "2x" and "2 x" stay
# expressions; the unit group starts at the spaces before them.
UNIT = rf"(?P<unit>(?:\s*(?=[A-Za-z]{{2}})|\s+(?=[mgshL](?![A-Za-z]))){UNIT_WORD}(?:\s+{UNIT_WORD})*)"
NUMBER_ANSWER = re.compile(
    r"(?P<sign>[-+]?)\s*(?:[$€£¥])?\s*(?P<sign2>[-+]?)\s*"
    rf"(?:{MIXED}|{FRACTION}|{SCIENTIFIC}|{REPEATING}|{DECIMAL})"
    rf"\s*(?P<percent>%|percent\b)?{UNIT}?"
)
# "36\pi cm^3", "5\sqrt{2} m": an expression ending in a digit, a bracket or a command, a space, then a unit.
EXPRESSION_WITH_WORDS = re.compile(rf"(?P<head>.*(?:[\d}})]|\\[A-Za-z]+))(?=\s){UNIT}")
# "5 or six", "5 and more": a list, not a number with words.
LIST_WORD = re.compile(r"\b(?:or|and)\b")


def parse_number(text: str) -> Number | None:
    """A Number when `text` is one number with optional sign, currency, percent and unit, else None."""
    match = NUMBER_ANSWER.fullmatch(text)
    if not match or (match.group("sign") and match.group("sign2")):
        return None
    unit = (match.group("unit") or "").strip().rstrip(".,;:")
    if LIST_WORD.search(unit):
        return None
    try:
        value = _number_value(match)
    except (ValueError, ZeroDivisionError):  # "1/0", or more digits than int() accepts
        return None
    if value is None:
        return None
    if "-" in (match.group("sign"), match.group("sign2")):
        value = -value
    return Number(value, percent=bool(match.group("percent")), unit=unit)


def _number_value(match: re.Match) -> Fraction | None:
    g = match.groupdict()
    if g["whole"]:
        return int(g["whole"]) + Fraction(int(g["num"] or g["lnum"]), int(g["den"] or g["lden"]))
    numerator, denominator = g["fnum"] or g["flnum"] or g["fsnum"], g["fden"] or g["flden"] or g["fsden"]
    if numerator:
        return Fraction(numerator) / Fraction(denominator)
    if g["repeat"]:
        fixed, repeat = g["rfixed"], g["repeat"]
        shift = Fraction(10) ** len(fixed)
        return int(g["rwhole"] or 0) + Fraction(int(fixed or 0)) / shift + Fraction(int(repeat), 10 ** len(repeat) - 1) / shift
    if g["mantissa"]:
        exponent = int(g["e"] or g["p"])
        return Fraction(g["mantissa"]) * Fraction(10) ** exponent if abs(exponent) <= MAX_EXPONENT else None
    return Fraction(g["decimal"].replace(",", ""))


# ---- multiple choice, matrices, intervals, lists, tuples, assignments ----------------------------------------------

CHOICE = re.compile(r"\((?P<letter>[A-Ea-e])\)\s*(?P<value>.*)|(?P<bare>[A-E])")
CHOICE_LABEL = re.compile(r"\([A-Ea-e]\)")


def _choice(text: str) -> Choice | None:
    """ "(C) 12" (from \\textbf{(C)}\\ 12), "(C)" and "C": a multiple choice, with its value when given."""
    match = CHOICE.fullmatch(text)
    if not match or (match.group("value") and CHOICE_LABEL.search(match.group("value"))):
        return None  # "(A) 5 or (B) 6" is a list of two choices
    value = match.group("value")
    return Choice((match.group("letter") or match.group("bare")).upper(), _parse_clean(value) if value else None)


MATRIX = re.compile(
    r"[\[(]?\s*\\begin\{(?P<env>[pbB]?matrix|array)\}(?:\s*\{[lcr|\s]*\})?(?P<body>.*?)\\end\{(?P=env)\}\s*[\])]?", re.DOTALL
)


def _matrix(text: str) -> Matrix | None:
    """pmatrix, bmatrix, matrix and \\left[\\begin{array}..\\right] are the same matrix; rows of equal length."""
    match = MATRIX.fullmatch(text)
    if not match:
        return None
    rows = [row for row in re.split(r"\\\\", match.group("body")) if row.strip()]
    cells = [[cell.strip() for cell in row.split("&")] for row in rows]
    if not cells or len({len(row) for row in cells}) != 1 or not all(all(row) for row in cells):
        return None
    return Matrix(tuple(tuple(_parse_clean(cell) for cell in row) for row in cells))


VARIABLE = r"(?:[A-Za-z]|\\(?:alpha|beta|gamma|delta|theta|lambda|mu|phi|varphi|psi|omega|rho|sigma|tau))(?:_\{?\w+\}?)?"
INEQUALITY = re.compile(r"\s*(\\leqslant|\\geqslant|\\leq|\\geq|\\le|\\ge|\\lt|\\gt|<=|>=|<|>)(?![A-Za-z])\s*")
MEMBERSHIP = re.compile(rf"{VARIABLE}\s*\\in\s*(?P<set>.+)")
LESS = {"<", "<=", "\\lt", "\\le", "\\leq", "\\leqslant"}  # the others say "greater"
STRICT = {"<", ">", "\\lt", "\\gt"}


def _interval(text: str) -> Answer | None:
    """ "x \\in S" is S; "a < x \\le b" is (a, b]; "x > a" is (a, \\infty); the variable's name is not kept."""
    membership = MEMBERSHIP.fullmatch(text)
    if membership:
        return _parse_clean(membership.group("set"))
    parts = INEQUALITY.split(text)
    is_variable = [bool(re.fullmatch(VARIABLE, part)) for part in parts[::2]]
    if len(parts) == 3 and is_variable == [True, False]:  # x < b, x > a
        _, op, bound = parts
        bounds = (("-\\infty", True), (bound, op in STRICT)) if op in LESS else ((bound, op in STRICT), ("\\infty", True))
    elif len(parts) == 3 and is_variable == [False, True]:  # a < x, b > x
        bound, op, _ = parts
        bounds = ((bound, op in STRICT), ("\\infty", True)) if op in LESS else (("-\\infty", True), (bound, op in STRICT))
    elif len(parts) == 5 and is_variable == [False, True, False] and (parts[1] in LESS) == (parts[3] in LESS):
        first, op_first, _, op_second, second = parts  # a < x < b, or b > x > a
        bounds = ((first, op_first in STRICT), (second, op_second in STRICT))
        if op_first not in LESS:
            bounds = bounds[::-1]
    else:
        return None
    (low, low_strict), (high, high_strict) = bounds
    brackets = ("(" if low_strict else "[") + (")" if high_strict else "]")
    return Items(brackets, (_parse_clean(low), _parse_clean(high)))


ASSIGNMENT = re.compile(rf"(?P<name>{VARIABLE})\s*=\s*(?P<rhs>[^=]+)")
NAMES = re.compile(rf"{VARIABLE}|\(\s*{VARIABLE}(?:\s*,\s*{VARIABLE})+\s*\)")
OPEN, CLOSE = "([{", ")]}"
SEPARATOR = re.compile(r"[()\[\]{}]|\s*[,;]\s*|\s+(?:and|or)\s+|\s*\\cup(?![A-Za-z])\s*")


def _equalities(text: str) -> Answer | None:
    """ "x = 5", "(a, b) = (4, 1)" and "x = 2 \\cdot 3 = 6" are their last side; numbers that differ
    ("5 = 6") are a false statement, text that matches nothing; "y = 2x + 1", whose sides have a
    variable, is left whole, an equation."""
    sides = [side.strip() for side in text.split("=")]
    if len(sides) < 2 or not all(sides):
        return None
    if NAMES.fullmatch(sides[0]):
        sides = sides[1:]
    values = [_parse_clean(side) for side in sides]
    if any(isinstance(value, Expression) and value.expr.free_symbols for value in values):
        return None
    if all(isinstance(value, Number) for value in values) and len(set(values)) > 1:
        return _text(text)
    return values[-1]


def _expression_with_unit(text: str) -> Expression | None:
    """ "36\\pi cm^3": an expression with the words after it as its unit."""
    match = EXPRESSION_WITH_WORDS.fullmatch(text) if len(text) <= MAX_LATEX_CHARS else None
    if not match or LIST_WORD.search(match.group("unit")):
        return None
    head = _latex(match.group("head"))
    return Expression(head.expr, unit=match.group("unit")) if isinstance(head, Expression) else None


def _plus_minus(text: str) -> Items | None:
    """ "\\frac{-1 \\pm \\sqrt{5}}{2}" is the list of its two values (the LaTeX parser rejects \\pm)."""
    if text.count("\\pm") != 1:
        return None
    return Items("", tuple(_parse_clean(text.replace("\\pm", sign)) for sign in ("+", "-")))


def _items(text: str) -> Items | None:
    """A bracketed tuple/interval/set "(0, 9]" or a bare list "1331 and 1728"; None for one item."""
    brackets = ""
    if len(text) >= 2 and text[0] in OPEN and text[-1] in CLOSE and _closes_at_end(text):
        brackets, text = text[0] + text[-1], text[1:-1].strip()
    parts = _split_top_level(text)
    if len(parts) < 2:
        return None
    if any(not part for part in parts):
        return None
    assignments = [ASSIGNMENT.fullmatch(part) for part in parts]
    if not brackets and all(assignments):
        return _solutions(assignments)
    return Items(brackets, tuple(_parse_clean(part) for part in parts))


def _solutions(assignments: list[re.Match]) -> Items:
    """x=2, y=3; x=3, y=2 -> (2, 3), (3, 2): a solution ends where a name repeats; one name is a value."""
    solutions: list[list[re.Match]] = [[]]
    for assignment in assignments:
        if any(seen.group("name") == assignment.group("name") for seen in solutions[-1]):
            solutions.append([])
        solutions[-1].append(assignment)
    values = [tuple(_parse_clean(a.group("rhs")) for a in solution) for solution in solutions]
    if len(values) == 1:
        return Items("()", values[0])
    return Items("", tuple(value[0] if len(value) == 1 else Items("()", value) for value in values))


def _closes_at_end(text: str) -> bool:
    """Whether the bracket that opens `text` is the one that closes it: "(1)+(2)" is no tuple."""
    depth = 0
    for i, char in enumerate(text):
        depth += (char in OPEN) - (char in CLOSE)
        if depth == 0:
            return i == len(text) - 1
    return False


def _nesting(text: str) -> int:
    depth = deepest = 0
    for char in text:
        depth += (char in OPEN) - (char in CLOSE)
        deepest = max(deepest, depth)
    return deepest


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for token in SEPARATOR.finditer(text):
        if token.group() in OPEN:
            depth += 1
        elif token.group() in CLOSE:
            depth -= 1
        elif depth == 0:
            parts.append(text[start : token.start()].strip())
            start = token.end()
    parts.append(text[start:].strip())
    return parts
