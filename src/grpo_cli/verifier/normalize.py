"""Turn an answer's text into a value to compare: a Number (with its unit, if any), Items (a list, a
bracketed tuple, an interval or a set), a Matrix, an Expression (math-verify's LaTeX parser, on sympy)
or, when nothing parses, Text.

Both sides, the reference and the model's extracted answer, go through the same steps:
  1. clean: undo doubled backslashes (JSON escaped twice); drop $...$ (all of them when several spans are
     joined by words: "$1$ and $2$"), \\(...\\), \\boxed{}, \\text{}, **bold**, quotes, \\left/\\right,
     \\approx, a final period, braces around the whole answer (LaTeX grouping: "{1,3}" is the list 1, 3;
     a set is "\\{1,3\\}"); thin spaces inside a number (4,\\!321 and 1\\,000) become thousands separators,
     other thin spaces, \\quad and ~ are spaces; unicode minus -> "-", \\dfrac and \\cfrac -> \\frac,
     "**" -> "^", and a^b^c means a^(b^c); a cases environment is its rows joined by commas; an answer
     written wholly in another script's digits (٤٢, ४२) is read in ASCII digits. Elsewhere only ASCII digits
     are digits.
  2. number: sign, currency ($18.00, \\$18, €, £, ¥), thousands separators (2,125, 1{,}000 and 1 000),
     decimals, repeating decimals (0.\\overline{3}), fractions (3/4, \\frac{3}{4}, \\frac34), mixed numbers (1 1/2, 1\\frac{1}{2}), scientific
     notation (1.5e3, 1.5\\times10^{3}), percent (25%, 25\\%, 25 percent), then the words after it
     ("3.5 kg", "12 boxes", "5 m"): kept as the number's unit, judged in equivalence.py (units.py).
  3. a multiple choice: "(C) 12" (\\textbf{(C)}\\ 12), "(C)", "C"; a matrix (pmatrix, bmatrix, array): its
     entries, row by row.
  4. inequalities are intervals: "1 \\le x \\le 4" is [1, 4], "x > 2" is (2, \\infty), "0 < f(x) < 1" is
     (0, 1); "x \\in S" is S. Other inequalities in one variable are solved by sympy: "-x > -1" is
     (-\\infty, 1), "1 \\le |z| \\le 2" is [-2, -1] \\cup [1, 2].
  5. items: "1331 and 1728", "1, 2; 3", "4, 9 or 16", "(1,2)or(2,1)", "A \\cup B" is an unordered list;
     (a, b), [a, b), {a, b} keep their brackets; "7:32" is a ratio. Assignments group into solutions:
     "x=2, y=3; x=3, y=2" is the list of named tuples (x=2, y=3), (x=3, y=2); "x=2 or x=3" is the list 2, 3.
  6. "x = 5", "(a, b) = (4, 1)", "|AB| = 4", "f(x) = 1" and "x = 2 \\cdot 3 = 6" are their last side, under
     the name on the left when the left side is one ("5 = 6" matches nothing); "y = 2x + 1", whose sides
     have a variable, stays an equation. "a \\pm b" is the list a + b, a - b.
  7. anything else is LaTeX for math-verify's parser (latex2sympy2_extended), else plain text; words after
     it are its unit, as for a number ("36\\pi cm^3"). Digits apart by a space ("12 3") are text: the
     parser would read 12*3. A sum or product of matrices is evaluated to its matrix.

Model text only meets regexes and a grammar parser here, never eval/exec (sympy's parse_expr evals).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Union

from latex2sympy2_extended.latex2sympy2 import NormalizationConfig, latex2sympy
from math_verify.grader import should_treat_as_complex
from sympy import Abs, Basic, Equality, FiniteSet, I, Interval, MatrixBase, Poly, PolynomialError
from sympy import Union as SetUnion
from sympy.core.function import AppliedUndef
from sympy.core.relational import Relational
from sympy.logic.boolalg import And, Or
from sympy.matrices.expressions import MatrixExpr

from grpo_cli.verifier.extract import unbox, undouble


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


@dataclass(frozen=True)
class Labelled:
    """ "x = 5", "|AB| = 4", "\\sin(x) = 0.5": a value under a name; two names must agree to match."""

    label: str  # without spaces, braces and brackets: "a_37", "\\sinx", "x,y"
    value: "Answer"


Answer = Union[Number, Items, Matrix, Choice, Expression, Text, Labelled]

# The same LaTeX normalization math-verify's LatexExtractionConfig uses (units and \text{} dropped).
LATEX_NORMALIZATION = NormalizationConfig(
    basic_latex=True, units=True, malformed_operators=True, nits=True, boxed="all", equations=False
)
MAX_LATEX_CHARS = 1000  # longer answers are compared as text
MAX_NESTING = 50  # and so are answers with brackets nested deeper
MAX_ITEMS = 1000  # and lists longer than this: reading thousands of items costs more than a check may take
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
    for parse in (parse_number, _choice, _matrix, _interval, _items, _ratio, _equalities, _plus_minus, _expression_with_unit):
        answer = parse(text)
        if answer is not None:
            return answer
    return _latex(text)


def _latex(text: str) -> Expression | Text:
    # The LaTeX parser needs seconds for 5,000 characters.
    if len(text) > MAX_LATEX_CHARS or SPACED_DIGITS.search(text):
        return _text(text)
    complex_number = should_treat_as_complex(text)
    try:
        expr = latex2sympy(text, is_real=not complex_number, normalization_config=LATEX_NORMALIZATION)
    except Exception:  # the parser raises bare Exception on malformed LaTeX
        return _text(text)
    if complex_number:  # the parser keeps i a symbol: 1+2i, i\sqrt{3} and e^{i\pi} are numbers
        expr = expr.subs({symbol: I for symbol in expr.free_symbols if symbol.name == "i"})
    if isinstance(expr, (MatrixBase, MatrixExpr)):
        return _explicit_matrix(expr) or Expression(expr)
    if isinstance(expr, (Relational, And, Or)) and len(expr.free_symbols) == 1:
        return _as_intervals(expr) or Expression(expr)
    return Expression(expr)


MAX_MATRIX_ENTRIES = 400


def _explicit_matrix(expr: Basic) -> Matrix | None:
    """A sum or product of matrices ("A + B", "I I"), evaluated: models write the sum, the answer is its value."""
    try:
        if expr.shape[0] * expr.shape[1] > MAX_MATRIX_ENTRIES:
            return None
        explicit = expr.doit().as_explicit()
    except Exception:  # shapes that do not add up, symbolic sizes
        return None
    return Matrix(tuple(tuple(Expression(entry) for entry in explicit.row(i)) for i in range(explicit.rows)))


def _as_intervals(expr: Basic) -> Answer | None:
    """An inequality in one variable solved by sympy ("-x > -1", "1 \\le |z| \\le 2"), as our intervals.
    Only linear and quadratic ones, in the variable or its absolute value: answers are written so, and
    sympy needs up to half a second for others (x^5 + x > 1, \\sin x > 0), half the default timeout."""
    relations = expr.args if isinstance(expr, (And, Or)) else (expr,)
    if not all(isinstance(relation, Relational) and _quadratic(relation.lhs - relation.rhs) for relation in relations):
        return None
    try:
        solution = expr.as_set()
    except Exception:  # not solvable for its variable
        return None
    return _set_answer(solution)


def _quadratic(expr: Basic) -> bool:
    """A polynomial of degree at most 2 in its one variable, absolute values taken as their contents."""
    if len(expr.free_symbols) != 1 or expr.atoms(AppliedUndef):
        return False
    (variable,) = expr.free_symbols
    try:
        return Poly(expr.replace(Abs, lambda inside: inside), variable).degree() <= 2
    except PolynomialError:  # 1/x, sin x, e^x
        return False


def _set_answer(solution: Basic) -> Answer | None:
    if isinstance(solution, Interval):
        brackets = ("(" if solution.left_open else "[") + (")" if solution.right_open else "]")
        return Items(brackets, (Expression(solution.start), Expression(solution.end)))
    if isinstance(solution, SetUnion):
        parts = [_set_answer(part) for part in solution.args]
        return Items("", tuple(parts)) if all(parts) else None
    if isinstance(solution, FiniteSet):
        return Items("{}", tuple(Expression(element) for element in solution.args))
    return None


def _text(text: str) -> Text:
    return Text(squash(text))


def squash(text: str) -> str:
    """Lower case without spaces, except one space between two letters or digits: "2 1/4" is not "21/4"."""
    return re.sub(r"\s+", _kept_space, text.strip().lower())


def _kept_space(space: re.Match) -> str:
    text, start, end = space.string, space.start(), space.end()
    return " " if start > 0 and end < len(text) and text[start - 1].isalnum() and text[end].isalnum() else ""


# ---- cleaning -------------------------------------------------------------------------------------

WRAPPERS = [
    re.compile(p, re.DOTALL)
    for p in (r"\$\$(.*)\$\$", r"\$(.*)\$", r"\\\((.*)\\\)", r"\\\[(.*)\\\]", r"\*\*(.*)\*\*", r"`(.*)`", r'\\?"(.*?)\\?"', r"“(.*)”")
]
TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}")
# 4,\!321  56,\!789  1\,000  1{,}000: a thin space or {,} before three digits separates thousands.
THOUSANDS_SPACING = re.compile(r"(?<=\d)(?:,?\s*\\[,!]\s*|\{,\}\s*)(?=\d{3}(?!\d))")
DROPPED = re.compile(r"\\left(?![a-zA-Z])|\\right(?![a-zA-Z])|\\displaystyle|\^\s*\{?\\circ\}?|°")
# Other thin spaces and quads are spaces ("1\\,00" is 1 and 00); "\\\\ " (a matrix row break) is none.
THIN_SPACE = re.compile(r"(?<!\\)\\(?:[,;:! ]|q?quad(?![A-Za-z]))")
# \frac34 and \frac3{4} are TeX for \frac{3}{4}: written out, so every reader (the complex-number test too) sees one form.
FRACTION_SHORTHAND = re.compile(r"\\frac\s*([0-9])\s*(?:([0-9])|\{)")
CASES = re.compile(r"\\begin\{cases\}(?P<rows>.*?)\\end\{cases\}", re.DOTALL)
# An answer written wholly in one script's decimal digits other than ASCII: ٤٢, ४२, ๔๒ (Unicode \d).
FOREIGN_NUMBER = re.compile(r"[-+]?\d+(?:[.,\u066b]\d+)?")
APPROXIMATELY = re.compile(r"^\s*(?:\\approx|≈|\\sim)\s*")
POWER_CHAIN = re.compile(r"(?:\d+|[A-Za-z])(?:\^(?:\d+|[A-Za-z])){2,}")
REPLACEMENTS = {
    "\u2212": "-", "~": " ", "\u00a0": " ", "\u202f": " ", "\u2009": " ", "²": "^2", "³": "^3", "±": r"\pm ", "≤": r"\le ", "≥": r"\ge ",
    "\\dfrac": "\\frac", "\\tfrac": "\\frac", "\\cfrac": "\\frac", "\\varnothing": "\\emptyset", "\\mathbb{R}": "(-\\infty, \\infty)",
    "\\%": "%", "\\$": "$", "\\{": "{", "\\}": "}",
}


@lru_cache(maxsize=4096)
def clean(text: str) -> str:
    """Strip presentation (wrappers, spacing, a final period) so equal answers have equal text."""
    text = undouble(text.strip())
    text = CASES.sub(lambda cases: ", ".join(row.replace("&", " ") for row in re.split(r"\\\\", cases.group("rows")) if row.strip()), text)
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
        if text.count("$") >= 2:  # "1$ and $2", what is left of "$1$ and $2$": math spans, not prices
            text = text.replace("$", " ")
        text = _ungrouped(text)
    text = APPROXIMATELY.sub("", TEXT_COMMAND.sub(r" \1 ", text))
    text = THOUSANDS_SPACING.sub(",", text)
    text = THIN_SPACE.sub(" ", DROPPED.sub("", text)).replace("**", "^")
    text = re.sub(r"\s+\^", "^", text)  # 5 \text{cm}^2 -> 5 cm^2
    text = POWER_CHAIN.sub(_right_associative, text)
    text = FRACTION_SHORTHAND.sub(lambda f: f"\\frac{{{f.group(1)}}}{{{f.group(2)}}}" if f.group(2) else f"\\frac{{{f.group(1)}}}{{", text)
    text = re.sub(r"\s+", " ", text).strip().rstrip(".").strip()  # "5\\text{.}"
    return _ascii_digits(text) if FOREIGN_NUMBER.fullmatch(text) else text


def _ungrouped(text: str) -> str:
    """ "{1,3}" without its braces: unescaped braces only group in LaTeX (a set is written \\{1,3\\}). All
    layers at once, in one pass: as many as open it, close it and stay open everywhere between."""
    opening, closing = len(text) - len(text.lstrip("{")), len(text) - len(text.rstrip("}"))
    layers, depth = min(opening, closing), opening
    for char in text[opening : len(text) - closing]:
        depth += (char == "{") - (char == "}")
        layers = min(layers, depth)
    return text[layers:-layers] if layers > 0 else text


def _ascii_digits(number: str) -> str:
    return "".join(str(unicodedata.decimal(char)) if char.isdecimal() else "." if char == "\u066b" else char for char in number)


def _right_associative(chain: re.Match) -> str:
    """2^3^2 -> 2^{3^{2}}: a power tower is read from the top, 2^(3^2) = 512 (the LaTeX parser says 64)."""
    parts = chain.group(0).split("^")
    return "^{".join(parts) + "}" * (len(parts) - 1)


# ---- numbers --------------------------------------------------------------------------------------

MIXED = r"(?P<whole>\d+)(?:\s+(?P<num>\d+)/(?P<den>\d+)|\s*\\frac\{(?P<lnum>\d+)\}\{(?P<lden>\d+)\})"
FRACTION = r"(?P<fnum>\d+(?:\.\d+)?)/(?P<fden>\d+(?:\.\d+)?)|\\frac\{(?P<flnum>\d+(?:\.\d+)?)\}\{(?P<flden>\d+(?:\.\d+)?)\}|\\frac(?P<fsnum>\d)(?P<fsden>\d)"
SCIENTIFIC = r"(?P<mantissa>\d+(?:\.\d*)?|\.\d+)(?:[eE](?P<e>[-+]?\d+)|\s*(?:\\times|×|\\cdot)\s*10\^\{?(?P<p>[-+]?\d+)\}?)"
REPEATING = r"(?P<rwhole>\d*)\.(?P<rfixed>\d*)\\overline\{(?P<repeat>\d+)\}"  # 0.1\overline{6} = 1/6
DECIMAL = r"(?P<decimal>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?: \d{3})+(?:\.\d+)?|\d+(?:\.\d*)?|\.\d+)"
# A unit or word after a number: letters (no backslash: "\sqrt{2} \cdot x" is no unit), then no digit but
# in an exponent ("km/h", "cm^2", "m^{3}").
UNIT_WORD = r"[A-Za-z][^\s\d^\\]*(?:\^\{?-?\d\}?[^\s\d^\\]*)*"
# Words start with two letters ("kg", "boxes") or are one of m, g, s, h, L, so that "2x" and "2 x" stay
# expressions; the unit group starts at the spaces before them.
UNIT = rf"(?P<unit>(?:\s*(?=[A-Za-z]{{2}})|\s+(?=[mgshL](?![A-Za-z]))){UNIT_WORD}(?:\s+{UNIT_WORD})*)"
NUMBER_ANSWER = re.compile(
    r"(?P<sign>[-+]?)\s*(?:[$€£¥])?\s*(?P<sign2>[-+]?)\s*"
    rf"(?:{MIXED}|{FRACTION}|{SCIENTIFIC}|{REPEATING}|{DECIMAL})"
    rf"\s*[$€£¥]?\s*(?P<percent>%|percent\b)?{UNIT}?",  # the currency after the number, as in 1,000.99€
    re.ASCII,  # a Tamil or Thai digit in text is no digit (an answer wholly in them was converted by clean)
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
    return Fraction(g["decimal"].replace(",", "").replace(" ", ""))


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
# What an inequality bounds: a variable, or a function of one ("0 < f(x) < 1" is the interval (0, 1)).
BOUNDED = re.compile(rf"{VARIABLE}(?:\(\s*{VARIABLE}\s*\))?")
INEQUALITY = re.compile(r"\s*((?:\\leqslant|\\geqslant|\\leq|\\geq|\\le|\\ge|\\lt|\\gt)(?![A-Za-z])|<=|>=|<|>)\s*")
MEMBERSHIP = re.compile(rf"{VARIABLE}\s*\\in\s*(?P<set>.+)")
SET_BUILDER = re.compile(rf"{VARIABLE}\s*(?:\\mid|\||:)\s*(?P<condition>.+)")  # {x | x > 1}, its braces gone
LESS = {"<", "<=", "\\lt", "\\le", "\\leq", "\\leqslant"}  # the others say "greater"
STRICT = {"<", ">", "\\lt", "\\gt"}


def _interval(text: str) -> Answer | None:
    """ "x \\in S" is S; "a < x \\le b" is (a, b]; "x > a" is (a, \\infty); "{x | x > 1}" is its condition;
    the variable's name is not kept."""
    membership = MEMBERSHIP.fullmatch(text)
    if membership:
        return _parse_clean(membership.group("set"))
    builder = SET_BUILDER.fullmatch(text)
    if builder:
        return _parse_clean(builder.group("condition"))
    parts = INEQUALITY.split(text)
    is_variable = [bool(BOUNDED.fullmatch(part)) for part in parts[::2]]
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
# A name on the left of "=": letters and commands with subscripts and arguments, joined by nothing, ":",
# "|", braces or commas: x, a_{37}, f(x), \sin(x), |AB|, A:B, \frac{NO}{BO}, (x, y). No digit outside a
# subscript or argument, no operator: "2x + z = 1" and "x^2 = 25" are equations.
LABEL_PARTS = re.compile(r"_\{[^{}]*\}|_[A-Za-z0-9]|(?<=[A-Za-z}])\([^()]*\)")
LABEL = re.compile(r"(?=.*[A-Za-z])(?:\\[A-Za-z]+(?![A-Za-z])|[A-Za-z]|[\s{}|:,])+")  # one way to match each name: no backtracking blow-up
OPEN, CLOSE = "([{", ")]}"
# Separators of items: brackets, commas, semicolons, "and"/"or" (also glued between items: "(1,2)or(2,1)").
SEPARATOR = re.compile(
    r"[()\[\]{}]|\s*[,;]\s*|\s+(?:and|or)\s+|(?<=[)\]}0-9])(?:and|or)(?=[(\[{A-Za-z0-9\\-])|\s*\\cup(?![A-Za-z])\s*"
)
RATIO = re.compile(r"\d+(?:\.\d+)?(?:\s*:\s*\d+(?:\.\d+)?)+", re.ASCII)


def _equalities(text: str) -> Answer | None:
    """ "x = 5", "(a, b) = (4, 1)" and "x = 2 \\cdot 3 = 6" are their last side, under the left side's name
    when it is one; numbers that differ ("5 = 6") are a false statement, text that matches nothing;
    "y = 2x + 1", whose sides have a variable, is left whole, an equation."""
    sides = [side.strip() for side in _split_outside_braces(text, "=")]
    if len(sides) < 2 or not all(sides):
        return None
    label = _label(sides[0])
    if label:
        sides = sides[1:]
    values = [_parse_clean(side) for side in sides]
    if any(isinstance(value, Expression) and value.expr.free_symbols for value in values):
        if not label and len(values) == 2 and all(isinstance(value, Expression) for value in values):
            # The equation from its parsed sides: parsing it whole again costs as much (half a second for a sum).
            return Expression(Equality(values[0].expr, values[1].expr, evaluate=False))
        return None
    if all(isinstance(value, Number) for value in values) and len(set(values)) > 1:
        return _text(text)
    return Labelled(label, values[-1]) if label else values[-1]


def _label(side: str) -> str | None:
    """The name `side` is, as compared ("a_{37}" and "a_37" are one name; f(x) and f(n) are one function,
    f(2) another value), or None when it is no name."""
    if not LABEL.fullmatch(LABEL_PARTS.sub("", side).strip("()")):
        return None
    return re.sub(r"[\s{}()\[\]]", "", DUMMY_ARGUMENT.sub(lambda call: call.group(1) or call.group(2), side))


# The variable a function is written of: "f(x)", "\sin x", "\sin(x)" name the function alone.
DUMMY_ARGUMENT = re.compile(r"(\\[A-Za-z]+|\b[A-Za-z])\s*\(\s*[A-Za-z]\s*\)|(\\[A-Za-z]+)\s+[A-Za-z]\b")


def _split_outside_braces(text: str, separator: str) -> list[str]:
    """`text` split at `separator` where no brace is open: "\\sum_{k=0}^{n} = 5" has two sides."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char == "{") - (char == "}")
        if char == separator and depth == 0 and text[i - 1 : i] not in ("<", ">", "!"):
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def _ratio(text: str) -> Items | None:
    """ "7:32" and "12:00": numbers apart by colons, compared in order (12:00 is not 1:00)."""
    if not RATIO.fullmatch(text):
        return None
    return Items(":", tuple(_parse_clean(part.strip()) for part in text.split(":")))


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
    if len(parts) > MAX_ITEMS:
        return _text(text)
    if any(not part for part in parts):
        return None
    assignments = [ASSIGNMENT.fullmatch(part) for part in parts]
    if not brackets and all(assignments):
        return _solutions(assignments)
    return Items(brackets, tuple(_parse_clean(part) for part in parts))


def _solutions(assignments: list[re.Match]) -> Items:
    """x=2, y=3; x=3, y=2 -> (x=2, y=3), (x=3, y=2): a solution ends where a name repeats; a solution of
    one name is its named value."""
    solutions: list[list[re.Match]] = [[]]
    for assignment in assignments:
        if any(seen.group("name") == assignment.group("name") for seen in solutions[-1]):
            solutions.append([])
        solutions[-1].append(assignment)
    values = [tuple(Labelled(_label(a.group("name")), _parse_clean(a.group("rhs"))) for a in solution) for solution in solutions]
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
