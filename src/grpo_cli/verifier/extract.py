"""Find the answer a completion commits to, as text; `verifier.extract` picks the mode.

  final_line   the last line that starts with the marker (default `FINAL:`); the rest of that line
  boxed        the last complete `\\boxed{...}` (nested braces allowed)
  gsm8k        the text after the last `####`, to the end of its line
  answer_is    "the (final) answer is ..." (last one), to the end of its sentence
  last_number  the last number: 1,234.5  -3  3/4  1 1/2  $18  25%
  auto         free-form math: the last \\boxed{}; else the latest answer phrase (marker line, ####,
               "the answer is", "answer:"); else the last LaTeX span; else the last number

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
        boxed = last_boxed(text)
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
    closing: dict[int, int] = {}
    open_stack: list[int] = []
    for i, char in enumerate(text):
        if char == "{":
            open_stack.append(i)
        elif char == "}" and open_stack:
            closing[open_stack.pop()] = i
    for box in reversed(list(BOXED.finditer(text))):
        brace = box.end() - 1
        if brace in closing:
            return text[brace + 1 : closing[brace]].strip() or None
    return None


BOXED = re.compile(r"\\boxed\s*\{")

# A number as people write answers: sign, currency, thousands separators, decimals, fractions,
# mixed numbers ("1 1/2"), percent. The minus must not follow a word or digit ("3-5" is no -5).
NUMBER = re.compile(
    r"(?:(?<![\w)])[-\u2212])?[$€£]?\s?"
    r"(?:\d+\s\d+/\d+|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:/\d+)?|\.\d+)"
    r"(?:\s?%)?"
)
ANSWER_IS = re.compile(r"\b(?:the\s+)?(?:final\s+)?answer\s+is\s*:?", re.IGNORECASE)
ANSWER_COLON = re.compile(r"\b(?:final\s+)?answer\s*:", re.IGNORECASE)
SENTENCE_END = re.compile(r"\.(?:\s|$)")
# $$...$$, $...$, \(...\), \[...\]; a span cannot hold its own opening delimiter, which keeps the
# scan linear on text such as 5,000 unclosed "\(".
LATEX_SPAN = re.compile(
    r"\$\$(?P<d>[^$]+)\$\$|\$(?P<i>[^$\n]+)\$"
    r"|\\\((?P<p>(?:[^\\]|\\(?!\())+?)\\\)|\\\[(?P<b>(?:[^\\]|\\(?!\[))+?)\\\]"
)
LATEX_COMMAND = re.compile(r"\\[A-Za-z]+(?:\{[^{}]*\})?")
WORD = re.compile(r"[A-Za-z]{2,}")


def _last_match(pattern: re.Pattern, text: str) -> re.Match | None:
    match = None
    for match in pattern.finditer(text):
        pass
    return match


def _last_answer_phrase(text: str, phrase: re.Pattern = ANSWER_IS) -> tuple[int, str] | None:
    """(position, answer) of the last `phrase`; the answer runs to the end of its sentence or line."""
    match = _last_match(phrase, text)
    if not match:
        return None
    rest = text[match.end() :].split("\n", 1)[0]
    answer = SENTENCE_END.split(rest, maxsplit=1)[0].strip()
    return (match.start(), answer) if answer else None


def _line_start(text: str, line_number: int) -> int:
    start = 0
    for _ in range(line_number):
        start = text.index("\n", start) + 1
    return start


def _auto(text: str, marker: str) -> Extraction | None:
    boxed = last_boxed(text)
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
