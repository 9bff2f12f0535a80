"""Turn an answer's text into a value to compare: a Number, Items (a list or a bracketed tuple), an
Expression (math-verify's LaTeX parser, on sympy) or, when nothing parses, Text.

Both sides, the reference and the model's extracted answer, go through the same steps:
  1. clean: drop $...$, \\(...\\), \\boxed{}, \\text{}, **bold**, \\left/\\right, thin spaces, a final period;
     unicode minus -> "-", \\dfrac -> \\frac, "**" -> "^", and a^b^c means a^(b^c) as in mathematics.
  2. number: sign, currency ($18.00, \\$18, €, £, ¥), thousands separators (2,125 and 1{,}000),
     decimals, fractions (3/4, \\frac{3}{4}, \\frac34), mixed numbers (1 1/2, 1\\frac{1}{2}), scientific
     notation (1.5e3, 1.5\\times10^{3}), percent (25%, 25\\%, 25 percent), then any unit or trailing
     words ("12 boxes", "3.5 kg"). Units are dropped, never converted: 3.5 kg equals 3.5 g.
  3. items: "1331 and 1728", "1, 2; 3" is an unordered list; (a, b), [a, b), {a, b} keep their brackets.
  4. "x = 5" is 5.
  5. anything else is LaTeX for math-verify's parser (latex2sympy2_extended), else plain text.

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


@dataclass(frozen=True)
class Number:
    value: Fraction  # as written: "25%" has value 25 and percent True
    percent: bool = False


@dataclass(frozen=True)
class Items:
    brackets: str  # "" for a bare list, else the open and close characters: "()", "[)", "{}"
    items: tuple["Answer", ...]


@dataclass(frozen=True)
class Expression:
    expr: Basic


@dataclass(frozen=True)
class Text:
    text: str


Answer = Union[Number, Items, Expression, Text]

# The same LaTeX normalization math-verify's LatexExtractionConfig uses (units and \text{} dropped).
LATEX_NORMALIZATION = NormalizationConfig(
    basic_latex=True, units=True, malformed_operators=True, nits=True, boxed="all", equations=False
)
MAX_LATEX_CHARS = 1000  # longer answers are compared as text
MAX_NESTING = 50  # and so are answers with brackets nested deeper
MAX_EXPONENT = 1000  # 1e400 is a number; 1e99999999 is left to sympy, under the check's timeout


@lru_cache(maxsize=4096)
def parse_answer(text: str) -> Answer | None:
    """The comparable value of an answer's text; None when nothing is left after cleaning."""
    cleaned = clean(text)
    if not cleaned:
        return None
    # Parsing recurses into brackets, and the LaTeX parser needs a minute for 5,000 nested braces.
    return _text(cleaned) if _nesting(cleaned) > MAX_NESTING else _parse_clean(cleaned)


def _parse_clean(text: str) -> Answer:
    number = parse_number(text)
    if number is not None:
        return number
    items = _items(text)
    if items is not None:
        return items
    assignment = ASSIGNMENT.fullmatch(text)
    if assignment:
        return _parse_clean(assignment.group("rhs"))
    if len(text) > MAX_LATEX_CHARS:  # the LaTeX parser needs seconds for 5,000 characters
        return _text(text)
    try:
        return Expression(latex2sympy(text, is_real=not should_treat_as_complex(text), normalization_config=LATEX_NORMALIZATION))
    except Exception:  # the parser raises bare Exception on malformed LaTeX
        return _text(text)


def _text(text: str) -> Text:
    return Text(re.sub(r"\s+", "", text).lower())


# ---- cleaning -------------------------------------------------------------------------------------

WRAPPERS = [re.compile(p, re.DOTALL) for p in (r"\$\$(.*)\$\$", r"\$(.*)\$", r"\\\((.*)\\\)", r"\\\[(.*)\\\]", r"\*\*(.*)\*\*", r"`(.*)`")]
BOXED = re.compile(r"\\boxed\s*\{(.*)\}", re.DOTALL)
TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
DROPPED = re.compile(r"\\left(?![a-zA-Z])|\\right(?![a-zA-Z])|\\displaystyle|\\[,;:! ]|\^\s*\{?\\circ\}?|°")
POWER_CHAIN = re.compile(r"(?:\d+|[A-Za-z])(?:\^(?:\d+|[A-Za-z])){2,}")
REPLACEMENTS = {"\u2212": "-", "\u00a0": " ", "\u202f": " ", "\\dfrac": "\\frac", "\\tfrac": "\\frac", "\\%": "%", "\\$": "$", "\\{": "{", "\\}": "}", "{,}": ","}


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
        boxed = BOXED.fullmatch(text)
        if boxed:
            text = boxed.group(1)
    text = TEXT_COMMAND.sub(r" \1 ", text)
    text = DROPPED.sub("", text).replace("**", "^")
    text = POWER_CHAIN.sub(_right_associative, text)
    return re.sub(r"\s+", " ", text).strip()


def _right_associative(chain: re.Match) -> str:
    """2^3^2 -> 2^{3^{2}}: a power tower is read from the top, 2^(3^2) = 512 (the LaTeX parser says 64)."""
    parts = chain.group(0).split("^")
    return "^{".join(parts) + "}" * (len(parts) - 1)


# ---- numbers --------------------------------------------------------------------------------------

MIXED = r"(?P<whole>\d+)(?:\s+(?P<num>\d+)/(?P<den>\d+)|\s*\\frac\{(?P<lnum>\d+)\}\{(?P<lden>\d+)\})"
FRACTION = r"(?P<fnum>\d+(?:\.\d+)?)/(?P<fden>\d+(?:\.\d+)?)|\\frac\{(?P<flnum>\d+(?:\.\d+)?)\}\{(?P<flden>\d+(?:\.\d+)?)\}|\\frac(?P<fsnum>\d)(?P<fsden>\d)"
SCIENTIFIC = r"(?P<mantissa>\d+(?:\.\d*)?|\.\d+)(?:[eE](?P<e>[-+]?\d+)|\s*(?:\\times|×|\\cdot)\s*10\^\{?(?P<p>[-+]?\d+)\}?)"
DECIMAL = r"(?P<decimal>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d*)?|\.\d+)"
# Unit words start with two letters ("kg", "boxes", "km/h") so that "2x" stays an expression.
NUMBER_ANSWER = re.compile(
    r"(?P<sign>[-+]?)\s*(?:[$€£¥])?\s*(?P<sign2>[-+]?)\s*"
    rf"(?:{MIXED}|{FRACTION}|{SCIENTIFIC}|{DECIMAL})"
    r"\s*(?P<percent>%|percent\b)?"
    r"(?:\s*[A-Za-z]{2}[^\s\d]*)?(?:\s+[A-Za-z]{2}[^\s\d]*)*"
)


def parse_number(text: str) -> Number | None:
    """A Number when `text` is one number with optional sign, currency, percent and units, else None."""
    match = NUMBER_ANSWER.fullmatch(text)
    if not match or (match.group("sign") and match.group("sign2")):
        return None
    try:
        value = _number_value(match)
    except (ValueError, ZeroDivisionError):  # "1/0", or more digits than int() accepts
        return None
    if value is None:
        return None
    if "-" in (match.group("sign"), match.group("sign2")):
        value = -value
    return Number(value, percent=bool(match.group("percent")))


def _number_value(match: re.Match) -> Fraction | None:
    g = match.groupdict()
    if g["whole"]:
        return int(g["whole"]) + Fraction(int(g["num"] or g["lnum"]), int(g["den"] or g["lden"]))
    numerator, denominator = g["fnum"] or g["flnum"] or g["fsnum"], g["fden"] or g["flden"] or g["fsden"]
    if numerator:
        return Fraction(numerator) / Fraction(denominator)
    if g["mantissa"]:
        exponent = int(g["e"] or g["p"])
        return Fraction(g["mantissa"]) * Fraction(10) ** exponent if abs(exponent) <= MAX_EXPONENT else None
    return Fraction(g["decimal"].replace(",", ""))


# ---- lists, tuples, intervals ---------------------------------------------------------------------

ASSIGNMENT = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(?P<rhs>[^=]+)")
OPEN, CLOSE = "([{", ")]}"
SEPARATOR = re.compile(r"[()\[\]{}]|\s*[,;]\s*|\s+and\s+")


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
    return Items(brackets, tuple(_parse_clean(part) for part in parts))


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
