"""Find the answer a completion commits to, as text; `verifier.extract` picks the mode.

  final_line   the last line that starts with the marker (default `FINAL:`); the rest of that line
  boxed        the last complete `\\boxed{...}` (nested braces allowed); boxes written one after another,
               apart only by commas, "and"/"or", a label (`x = \\boxed{2}, y = \\boxed{3}`) or a few words
               ending in "and"/"or" (`\\boxed{(3,3)} for part (a) and \\boxed{(1,1)}`), are one answer
  gsm8k        the text after the last `####`, to the end of its line
  answer_is    "the (final) answer is ..." (last one), to the end of its sentence
  last_number  the last number: 1,234.5  4,\\!321  -3  3/4  \\frac{7}{3}  1 1/2  $18  25%; a digit inside a
               word (QX7TB) is no number, and only ASCII digits are digits
  auto         free-form math, in math-verify's order of extraction targets: the box(es) as for boxed, or an
               answer phrase written after them (marker line, ####, "the answer is", "answer:"), the latest
               winning; a phrase that is a clause ("The largest $n$ is 34") reduces to its value. Else the
               whole completion when it is one LaTeX span or a bare answer (`x+1`, `(1,2)`, `odd`). Else the
               last math expression: whichever of the last LaTeX span (with the spans before it joined by
               "and"/"or"/commas) and the last number (with its unit words; with the numbers before it when
               they form a comma list) ends later.

Each mode also says whether the completion is well formed for it (the format reward): final_line and
gsm8k want exactly one answer line and nothing after it; auto wants a box or an answer phrase; the
other modes are well formed whenever they find an answer.

Only linear scans and regexes without nested quantifiers run here: this runs on untrusted model text.
That is also why auto follows math-verify's order with its own scans rather than calling
math_verify.parse, whose regexes take seconds on 10 KB of unclosed `\\(`.
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
        boxed = boxed_answer(undouble(text))
        return Extraction(boxed[1], True) if boxed else None
    if mode == "answer_is":
        found = _last_answer_phrase(text)
        return Extraction(found[1], True) if found else None
    if mode == "last_number":
        number = _last_match(NUMBER, text)
        return Extraction(number.group(0).strip(), True) if number else None
    if mode == "auto":
        return _auto(undouble(text), marker)
    raise ValueError(f"unknown extraction mode {mode!r}")


def undouble(text: str) -> str:
    """LaTeX whose every backslash is doubled, as JSON escaping twice leaves it (`-2 \\\\le x \\\\le 7`), with
    the doubling undone; other text as it is. Doubled means: every run of backslashes is of even length and
    at least one comes before a command's letters, so a single-escaped matrix row break (`1 \\\\ 3`) stays."""
    runs = BACKSLASHES.findall(text)
    if not any(run[-1:].isalpha() for run in runs) or any(len(run.rstrip(LETTERS)) % 2 for run in runs):
        return text
    return BACKSLASHES.sub(lambda run: run.group(0)[len(run.group(0).rstrip(LETTERS)) // 2 :], text)


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


def boxed_answer(text: str) -> tuple[int, str] | None:
    """(where the chain starts, the answer): the last box, joined with the boxes just before it when only
    separators, labels or a few words ending in "and"/"or" stand between them: `\\boxed{2}, \\boxed{5} and
    \\boxed{9}` is "2, 5, 9" and `x = \\boxed{2}, y = \\boxed{3}` is "x = 2, y = 3". A repeated box counts once."""
    boxes = _closed_boxes(text)
    if not boxes:
        return None
    chain = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        if not _joins_boxes(text[box[2] + 1 : chain[0][0]]):
            break
        chain.insert(0, box)
    pieces = []
    for start, content_start, content_end in chain:
        label = BOX_LABEL.search(text, max(0, start - 40), start)
        piece = (label.group("name") + " = " if label else "") + text[content_start:content_end].strip()
        if piece and piece not in pieces:
            pieces.append(piece)
    return (chain[0][0], ", ".join(pieces)) if pieces else None


def _joins_boxes(gap: str) -> bool:
    """Whether the text between two boxes makes them one answer: separators and a label, or at most
    MAX_GAP_WORDS words that end in "and"/"or" ("for part (a) and", "papers and"), not "or maybe"."""
    if BOX_GAP.fullmatch(gap):
        return True
    words = GAP_NOISE.sub(" ", gap).split()
    return 1 < len(words) <= MAX_GAP_WORDS + 1 and words[-1] in ("and", "or") and not set(words) & HEDGES


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


LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
BACKSLASHES = re.compile(r"\\+[A-Za-z]?")
# The one pattern for a box: extraction and normalization both use it.
BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
# What may stand between boxes of one answer: $, \( \) \[ \], commas, "and"/"or" (bare or in \text{}), \quad, a label.
BOX_GAP = re.compile(
    r"(?:\s|\$|\\[()\[\]]|[,;]|\\q?quad|\\[,;!]|\\text\{\s*(?:and|or|,)?\s*\}|\b(?:and|or)\b)*"
    r"(?:[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(?:\$|\\\()?\s*)?"
)
GAP_NOISE = re.compile(r"\\text\{|\\q?quad|\\[()\[\],;!]|[${},;.]")
MAX_GAP_WORDS = 4
HEDGES = {"but", "not", "maybe", "no", "wait", "actually", "instead"}
# A label names the box only when it starts a term: "x = \\boxed{2}", not the p of "x-p = \\boxed{2-2p}".
BOX_LABEL = re.compile(r"(?P<name>(?<![^\s$(,{])[A-Za-z](?:_\{?\w+\}?)?)\s*=\s*(?:\$|\\\()?\s*\Z")

# A number as people write answers: sign, currency, thousands separators (also LaTeX's 4,\\!321 and
# 1\\,000, and a space between groups of three: 1 000), decimals, fractions (3/4, \\frac{7}{3}), mixed
# numbers ("1 1/2"), percent. The minus must not follow a word or digit ("3-5" is no -5); a digit must not
# touch a letter before it (QX7TB is no 7). Digits are ASCII: a Tamil or Thai digit in prose is no number.
NUMBER = re.compile(
    r"(?:(?<![\w)])[-\u2212])?[$€£]?\s?(?<![A-Za-z_])(?<![0-9])"
    r"(?:\\[dt]?frac\{[0-9]+\}\{[0-9]+\}|\\[dt]?frac[0-9][0-9]|[0-9]+\s[0-9]+/[0-9]+"
    r"|[0-9]{1,3}(?:(?:,|,?\s?\\[,!]\s?|\{,\}| )[0-9]{3})+(?![0-9])(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?(?:/[0-9]+)?|\.[0-9]+)"
    r"(?![A-Za-z]*[0-9])(?:\s?%)?",
    re.ASCII,
)
# Up to three words after a number, its unit if they are one ("1.45 kg", "36 km/h", "3 hours ago"):
# normalize.py and units.py judge them. As there, a word is two letters or one of m, g, s, h, L ("$50 a
# day" keeps no words), and "and"/"or" end them ("5 apples and 7 pears").
UNIT_WORDS = re.compile(
    r"(?:[ \t]+(?!(?:and|or|is|are)\b)(?:[A-Za-z]{2,}|[mgshL](?![A-Za-z&']))(?:/[A-Za-z]+)?(?:\^[0-9])?){1,3}", re.ASCII
)
# Lists of numbers, read back from the last one: "1, 2, 3", "1;1;1" and "4 and 5", not "1,000" (one
# number). "or" between numbers restates a value ("0.60 or 60%") unless "either" opens the list.
LIST_LINK = re.compile(r"\s*[,;]\s*(?:(?:and|or)\s+)?\Z|\s+(?:and|or)\s+\Z")
EITHER = re.compile(r"\beither\s+\Z", re.IGNORECASE)
# Conditions joined by "or" are a union ("$x \le -3$ or $x \ge 2$"); values joined by "or" restate one value.
RELATION = re.compile(r"[<>]|\\(?:le|ge|leq|geq|lt|gt|neq|ne|in)(?![A-Za-z])")
ANSWER_IS = re.compile(r"\b(?:the\s+)?(?:final\s+)?answer\s+is\s*:?", re.IGNORECASE)
ANSWER_COLON = re.compile(r"\b(?:final\s+)?answer\s*:", re.IGNORECASE)
SENTENCE_END = re.compile(r"\.(?:\s|$)")
# $$...$$, $...$, \(...\), \[...\]; a span cannot hold its own opening delimiter, which keeps the
# scan linear on text such as 5,000 unclosed "\(". As in pandoc, $...$ has no space just inside its
# dollars and no digit after the closing one, so prices ("$8 + $3 = $11") are no span; math-verify also
# reads "$ 9 $" (spaces on both sides) and "$\sqrt3 $" (a command first), which no price looks like.
# An escaped dollar (\$18) is part of the math, not a delimiter.
INLINE = r"(?:[^$\n\\]|\\[^\n])"  # one character of inline math
LATEX_SPAN = re.compile(
    rf"(?<!\\)\$\$(?P<d>(?:[^$\\]|\\.)+)\$\$|(?<!\\)\$(?!\s)(?P<i>{INLINE}*[^$\s\\])\$(?!\d)"
    rf"|(?<!\\)\$[ \t]+(?P<s>(?!\s){INLINE}*[^$\s\\])[ \t]+\$(?!\d)"
    rf"|(?<!\\)\$(?P<c>\\[A-Za-z]{INLINE}*[^$\s\\])[ \t]+\$(?!\d)"
    r"|\\\((?P<p>(?:[^\\]|\\(?!\())+?)\\\)|\\\[(?P<b>(?:[^\\]|\\(?!\[))+?)\\\]"
)
# Inline math cannot run across lines: "$ \n 9 \n $" and "\( \n 9 \n \)" are broken spans, and the
# text inside them is not read (math-verify's rule); $$...$$ and \[...\] may span lines.
BROKEN_SPAN = re.compile(r"(?<!\S)\$[ \t]*\n[^$]*(?<=\s)\$(?!\$)|\\\([ \t]*\n[^\\]*\\\)")
# (three good outcomes out of 8): an aside in words; its numbers are not the answer. A computation in
# parentheses ("(2/3*6=4 miles per hour)") is no aside.
ASIDE = re.compile(r"\((?=[^()$\n]*[A-Za-z]{2})[^()$=\n]{1,200}\)")
SPAN_LINK = re.compile(r"\s*(?:,\s*)?(?:(?:and|or)\s*)?\Z")
MAX_JOINED_SPANS = 5  # as math-verify, which joins up to five
LATEX_COMMAND = re.compile(r"\\[A-Za-z]+(?:\{[^{}]*\})*")  # with its arguments: \begin{array}{cc}
WORD = re.compile(r"[A-Za-z]{2,}")
# A clause states its value after its last verb: "The largest $n$ is 34", "there are 12 ways".
COPULA = re.compile(r"\s(?:is|are|was|were|equals|=)\s")
CLAUSE_LIST = re.compile(r"\s(?:and|or)\s|,\s")
# Words that change the value a clause states ("at least 5", "not 5"): such a clause is not reduced.
QUALIFIERS = re.compile(
    r"\b(?:not|no|never|negative|minus|except|without|least|most|more|less|fewer|than|over|under|between|"
    r"almost|nearly|greater|smaller|larger|above|below|up to)\b",
    re.IGNORECASE,
)
MAX_BARE_WORDS = 2  # a completion of one or two words and no sentence ("odd", "Even", "Tuesday") is its answer
MAX_BARE_CHARS = 300  # longer math is no bare answer but text to search ("1,1,...,1" is still read as a list)


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
    """math-verify's order: a box, unless an answer phrase with math comes after it (its "final answer is"
    outranks boxes); then the latest answer phrase; then the last math expression."""
    boxed = boxed_answer(text)
    phrases = []  # (position, answer): the latest one wins
    for line_marker, anywhere in ((marker, False), ("####", True)):
        found = _marker_line(text, line_marker, anywhere)
        if found:
            phrases.append((_line_start(text, found[0]), found[1].answer))
    for phrase in (ANSWER_IS, ANSWER_COLON):
        found = _last_answer_phrase(text, phrase)
        if found:
            phrases.append(found)
    latest = max(phrases) if phrases else None
    if boxed and not (latest and latest[0] > boxed[0] and _holds_math(latest[1])):
        return Extraction(boxed[1], True)
    if latest:
        return Extraction(_clause_value(latest[1]), True)
    whole = text.strip()
    span = LATEX_SPAN.fullmatch(whole)
    if span or _is_bare_answer(whole):
        return Extraction(span.group(span.lastgroup).strip() if span else whole, False)
    found = _last_expression(text)
    return Extraction(found, False) if found else None


def _holds_math(answer: str) -> bool:
    return bool(re.search(r"[0-9\\$]", answer))


def _is_bare_answer(text: str) -> bool:
    """One line that is all math (no words outside LaTeX commands), or one or two words: the answer itself."""
    if not text or "\n" in text or len(text) > MAX_BARE_CHARS:
        return False
    prose = WORD.findall(LATEX_COMMAND.sub("", text))
    return not prose or (len(text.split()) <= MAX_BARE_WORDS and not re.search(r"[.!?:;]", text))


def _clause_value(answer: str) -> str:
    """An answer phrase that is a clause, reduced to its value: "The largest $n$ is 34" is 34, "Jane started
    growing Sphere 3 hours ago" is "3 hours ago". Math alone stays, and so does what the value cannot be
    read from without a guess: a phrase with "and"/"or" or a comma ("5 or six" is a list, not 5), words
    that change the value ("at least 5", "not 5"), or several values ("3 times 5")."""
    if not WORD.search(LATEX_COMMAND.sub("", answer)) or CLAUSE_LIST.search(_outside_math(answer)):
        return answer
    copula = _last_match(COPULA, _outside_math(answer))
    tail = answer[copula.end() :].strip() if copula else answer
    if tail and not WORD.search(LATEX_COMMAND.sub("", tail)):
        return tail
    outside = _outside_math(tail)
    values = len(NUMBER.findall(outside)) + len(re.findall(r"\0+", outside))  # numbers and spans of math
    if values != 1 or QUALIFIERS.search(outside):
        return answer
    return _last_expression(tail) or answer


def _outside_math(text: str) -> str:
    """`text` with its spans of math filled with NUL, same length, so positions still line up."""
    def fill(span: re.Match) -> str:
        return "\0" * len(span.group(0)) if _looks_like_math(span.group(span.lastgroup)) else span.group(0)

    return LATEX_SPAN.sub(fill, text)


def _last_expression(text: str) -> str | None:
    """The last math expression: the last LaTeX span holding math (and the spans before it that "and"/"or"
    or commas join to it) or the last number (with its unit words, and with the numbers of its comma list),
    whichever ends later. Broken spans and asides in words are not read."""
    text = BROKEN_SPAN.sub(_blank, text)
    outside = ASIDE.sub(_blank, _outside_math(text))  # an aside's spans are blanked with it
    spans = [span for span in LATEX_SPAN.finditer(text) if outside[span.start()] == "\0"]
    number = _last_match(NUMBER, outside)
    if spans and not (number and number.end() > spans[-1].end()):
        answer, end = _joined_spans(text, spans), spans[-1].end()
    elif number:
        answer, end = _number_list(outside, number), number.end()
    else:
        return None
    words = UNIT_WORDS.match(outside, end)
    return answer + (words.group(0) if words else "")


def _blank(match: re.Match) -> str:
    return " " * len(match.group(0))


def _joined_spans(text: str, spans: list[re.Match]) -> str:
    """The last span's math, with up to MAX_JOINED_SPANS spans before it joined by "and"/"or"/commas:
    "$x \\le -3$ or $x \\ge 2$" is "x \\le -3 or x \\ge 2"."""
    chain = [spans[-1]]
    for span in reversed(spans[:-1]):
        link = SPAN_LINK.match(text, span.end(), chain[0].start())
        if len(chain) == MAX_JOINED_SPANS or not link or link.end() != chain[0].start():
            break
        either = EITHER.search(text, max(0, span.start() - 20), span.start())
        if "or" in link.group(0) and not (RELATION.search(span.group(0)) or either):
            break
        chain.insert(0, span)
    pieces = [chain[0].group(chain[0].lastgroup).strip()]
    for previous, span in zip(chain, chain[1:]):
        conjunction = re.search(r"\b(?:and|or)\b", text[previous.end() : span.start()])
        pieces.append((f" {conjunction.group(0)} " if conjunction else ", ") + span.group(span.lastgroup).strip())
    return "".join(pieces)


def _number_list(text: str, number: re.Match) -> str:
    """The last number, or the comma list it ends ("1, 2, 3, 4" is a list, not 4; "1,1,...,1" is no 1)."""
    start = number.end() - len(number.group(0).lstrip())
    while True:
        previous = NUMBER_BEFORE.search(text, max(0, start - MAX_LIST_LOOKBACK), start)
        link = LIST_LINK.fullmatch(text, previous.end(), start) if previous else None
        if not link or ("or" in link.group(0) and not EITHER.search(text, max(0, previous.start() - 20), previous.start())):
            return text[start : number.end()].strip()
        start = previous.start()


# A list item stands alone: not the 5 of "5A/5" or "3-5".
NUMBER_BEFORE = re.compile(r"(?<![\w./*+^-])-?[0-9]+(?:\.[0-9]+)?(?=[^0-9]*\Z)", re.ASCII)
MAX_LIST_LOOKBACK = 40


def _looks_like_math(span: str) -> bool:
    """`$x^2$` is math; `$18 and $` (two prices) is prose: words outside LaTeX commands mean prose."""
    return bool(span.strip()) and not WORD.search(LATEX_COMMAND.sub("", span))
