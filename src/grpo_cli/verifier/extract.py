"""Find the answer a completion commits to, as text; `verifier.extract` picks the mode.

  final_line   the last line that starts with the marker (default `FINAL:`); the rest of that line
  boxed        the last complete `\\boxed{...}` (nested braces allowed); boxes written one after another,
               apart only by commas, "and"/"or" or a label (`x = \\boxed{2}, y = \\boxed{3}`), are one answer
  gsm8k        the text after the last `####`, to the end of its line
  answer_is    "the (final) answer is ..." (last one), to the end of its sentence
  last_number  the last number: 1,234.5  4,\\!321  -3  3/4  \\frac{7}{3}  1 1/2  $18  25%; a digit inside a
               word (QX7TB) is no number
  auto         free-form math: the box(es) as for boxed; else the latest answer phrase (marker line, ####,
               "the answer is", "answer:"); else the last LaTeX span that holds math; else the last number

Each mode also says whether the completion is well formed for it (the format reward): final_line and
gsm8k want exactly one answer line and nothing after it; auto wants a box or an answer phrase; the
other modes are well formed whenever they find an answer.

Only linear scans and regexes without nested quantifiers run here: this runs on untrusted model text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Extraction:
    answer: str
    well_formed: bool


def extract_answer(text: str, mode: str, marker: str = "FINAL:") -> Extraction | None:
    """The answer text of `text` under `mode`, or None when there is none (a parse failure)."""
    if mode in ("final_line", "gsm8k"):
        found = _marker_line(text, marker) if mode == "final_line" else _marker_line(text, "####", anywhere_in_line=True)
        return found[1] if found else None
    if mode == "boxed":
        boxed = boxed_answer(text)
        return Extraction(boxed, True) if boxed else None
    if mode == "answer_is":
        found = _last_answer_phrase(text)
        return Extraction(found[1], True) if found else None
    if mode == "last_number":
        number = _last_match(NUMBER, text)
        return Extraction(number.group(0).strip(), True) if number else None
    if mode == "auto":
        return _auto(text, marker)
    raise ValueError(f"unknown extraction mode {mode!r}")


def _marker_line(text: str, marker: str, anywhere_in_line: bool = False) -> tuple[int, Extraction] | None:
    """(line number, answer) of the last line holding `marker`, which wins over earlier ones; well
    formed when it is the only such line and the last non-blank one."""
    lines = [line.strip() for line in text.split("\n")]
    hits = [i for i, line in enumerate(lines) if (marker in line if anywhere_in_line else line.startswith(marker))]
    if not hits:
        return None
    last = lines[hits[-1]]
    answer = last[last.rindex(marker) + len(marker) :].strip()
    if not answer:
        return None
    last_nonblank = max(i for i, line in enumerate(lines) if line)
    return hits[-1], Extraction(answer, well_formed=len(hits) == 1 and hits[-1] == last_nonblank)


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` whose braces close; one pass, so deep nesting stays linear."""
    boxes = _closed_boxes(text)
    if not boxes:
        return None
    _, start, end = boxes[-1]
    return text[start:end].strip() or None


def boxed_answer(text: str) -> str | None:
    """The last box, joined with the boxes just before it when only separators and labels stand between
    them: `\\boxed{2}, \\boxed{5} and \\boxed{9}` is "2, 5, 9" and `x = \\boxed{2}, y = \\boxed{3}` is
    "x = 2, y = 3". A repeated box counts once."""
    boxes = _closed_boxes(text)
    if not boxes:
        return None
    chain = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        gap = text[box[2] + 1 : chain[0][0]]
        if not BOX_GAP.fullmatch(gap):
            break
        chain.insert(0, box)
    pieces = []
    for start, content_start, content_end in chain:
        label = BOX_LABEL.search(text, max(0, start - 40), start)
        piece = (label.group("name") + " = " if label else "") + text[content_start:content_end].strip()
        if piece and piece not in pieces:
            pieces.append(piece)
    return ", ".join(pieces) or None


def unbox(text: str) -> str | None:
    """The content when all of `text` is one `\\boxed{...}`, else None."""
    boxes = _closed_boxes(text) if BOXED.match(text) else []
    return text[boxes[0][1] : boxes[0][2]] if boxes and boxes[0][0] == 0 and boxes[0][2] == len(text) - 1 else None


def _closed_boxes(text: str) -> list[tuple[int, int, int]]:
    """(start of `\\boxed`, start of content, index of the closing brace) of each box whose braces close."""
    closing: dict[int, int] = {}
    open_stack: list[int] = []
    for i, char in enumerate(text):
        if char == "{":
            open_stack.append(i)
        elif char == "}" and open_stack:
            closing[open_stack.pop()] = i
    return [(box.start(), box.end(), closing[box.end() - 1]) for box in BOXED.finditer(text) if box.end() - 1 in closing]


# The one pattern for a box: extraction and normalization both use it.
BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
# What may stand between boxes of one answer: $, commas, "and"/"or" (bare or in \text{}), \quad, a label.
BOX_GAP = re.compile(
    r"(?:\s|\$|[,;]|\\q?quad|\\[,;!]|\\text\{\s*(?:and|or|,)?\s*\}|\b(?:and|or)\b)*"
    r"(?:[A-Za-z](?:_\{?\w+\}?)?\s*=\s*\$?\s*)?"
)
BOX_LABEL = re.compile(r"(?P<name>(?<![A-Za-z\\])[A-Za-z](?:_\{?\w+\}?)?)\s*=\s*\$?\s*\Z")

# A number as people write answers: sign, currency, thousands separators (also LaTeX's 4,\\!321 and
# 1\\,000), decimals, fractions (3/4, \\frac{7}{3}), mixed numbers ("1 1/2"), percent. The minus must not
# follow a word or digit ("3-5" is no -5); a digit must not touch a letter before it (QX7TB is no 7).
NUMBER = re.compile(
    r"(?:(?<![\w)])[-\u2212])?[$€£]?\s?(?<![A-Za-z_])"
    r"(?:\\[dt]?frac\{\d+\}\{\d+\}|\\[dt]?frac\d\d|\d+\s\d+/\d+"
    r"|\d{1,3}(?:(?:,|,?\s?\\[,!]\s?|\{,\})\d{3})+(?![\d])(?:\.\d+)?|\d+(?:\.\d+)?(?:/\d+)?|\.\d+)"
    r"(?![A-Za-z]*\d)(?:\s?%)?"
)
ANSWER_IS = re.compile(r"\b(?:the\s+)?(?:final\s+)?answer\s+is\s*:?", re.IGNORECASE)
ANSWER_COLON = re.compile(r"\b(?:final\s+)?answer\s*:", re.IGNORECASE)
SENTENCE_END = re.compile(r"\.(?:\s|$)")
# $$...$$, $...$, \(...\), \[...\]; a span cannot hold its own opening delimiter, which keeps the
# scan linear on text such as 5,000 unclosed "\(". As in pandoc, $...$ has no space inside its dollars
# and no digit after the closing one, so prices ("$8 + $3 = $11") are no span.
LATEX_SPAN = re.compile(
    r"\$\$(?P<d>[^$]+)\$\$|\$(?!\s)(?P<i>[^$\n]*[^$\s])\$(?!\d)"
    r"|\\\((?P<p>(?:[^\\]|\\(?!\())+?)\\\)|\\\[(?P<b>(?:[^\\]|\\(?!\[))+?)\\\]"
)
LATEX_COMMAND = re.compile(r"\\[A-Za-z]+(?:\{[^{}]*\})*")  # with its arguments: \begin{array}{cc}
WORD = re.compile(r"[A-Za-z]{2,}")


def _last_match(pattern: re.Pattern, text: str) -> re.Match | None:
    match = None
    for match in pattern.finditer(text):
        pass
    return match


def _last_answer_phrase(text: str, phrase: re.Pattern = ANSWER_IS) -> tuple[int, str] | None:
    """(position, answer) of the last `phrase`; the answer runs to the end of its sentence or line, without
    the bold markers around it ("**Answer:** 27")."""
    match = _last_match(phrase, text)
    if not match:
        return None
    rest = text[match.end() :].split("\n", 1)[0]
    answer = SENTENCE_END.split(rest, maxsplit=1)[0].strip().strip("*").strip()
    return (match.start(), answer) if answer else None


def _line_start(text: str, line_number: int) -> int:
    start = 0
    for _ in range(line_number):
        start = text.index("\n", start) + 1
    return start


def _auto(text: str, marker: str) -> Extraction | None:
    boxed = boxed_answer(text)
    if boxed:
        return Extraction(boxed, True)
    phrases = []  # (position, answer): the latest one wins
    for line_marker, anywhere in ((marker, False), ("####", True)):
        found = _marker_line(text, line_marker, anywhere)
        if found:
            phrases.append((_line_start(text, found[0]), found[1].answer))
    for phrase in (ANSWER_IS, ANSWER_COLON):
        found = _last_answer_phrase(text, phrase)
        if found:
            phrases.append(found)
    if phrases:
        return Extraction(max(phrases)[1], True)
    spans = [span for span in LATEX_SPAN.finditer(text) if _looks_like_math(span.group(span.lastgroup))]
    if spans:
        return Extraction(spans[-1].group(spans[-1].lastgroup).strip(), False)
    number = _last_match(NUMBER, text)
    return Extraction(number.group(0).strip(), False) if number else None


def _looks_like_math(span: str) -> bool:
    """`$x^2$` is math; `$18 and $` (two prices) is prose: words outside LaTeX commands mean prose."""
    return bool(span.strip()) and not WORD.search(LATEX_COMMAND.sub("", span))
