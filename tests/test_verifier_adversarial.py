"""Generated adversarial rows, seeded: none may score correct under verifier.extract=auto.

  - random Unicode text holding one non-ASCII digit (Tamil ௧, Thai ๑, Arabic-Indic ١ and ۱, Devanagari १,
    fullwidth １) against that digit's value: only a standalone numeral counts, and a non-ASCII one only when
    it is the whole answer;
  - a list of thousands of equal items (1,1,...,1; "7; 7; ..."; "2 and 2 and ...") against the item, bare,
    in prose, boxed or in $...$: a long list is a list, not its last element.

`make test` checks 2,200 rows (a few seconds); the slow test checks 10,000.
"""

import random
import unicodedata

import pytest

from grpo_cli.config import VerifierConfig
from grpo_cli.verifier.math_check import check_math

DIGITS = ["௦௧௨௩௪௫௬௭௮௯", "๐๑๒๓๔๕๖๗๘๙", "٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹", "०१२३४५६७८९", "０１２３４５６７８９"]
# Latin, Greek, Cyrillic, Hebrew, symbols, kana, CJK, emoji.
BLOCKS = [(0x21, 0x7E), (0xA1, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF), (0x2000, 0x2BFF), (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0x1F300, 0x1F5FF)]
LATEX_SYNTAX = set("$\\{}")  # a digit alone in $...$ or \boxed{} is a whole answer, so no delimiters are drawn
LIST_SEPARATORS = [",", ", ", " , ", ";", "; ", " and "]
LIST_SETTINGS = ["{}", "The values are {}.", r"$\boxed{{{}}}$", "${}$", "So the list is {}"]


def _character(rng: random.Random) -> str:
    """Any printable character but a digit (numbers, N*) or LaTeX syntax."""
    while True:
        low, high = rng.choice(BLOCKS)
        char = chr(rng.randint(low, high))
        if unicodedata.category(char)[0] not in "NC" and char not in LATEX_SYNTAX:
            return char


def unicode_row(rng: random.Random) -> tuple[str, str]:
    value = rng.randint(1, 9)
    text = [_character(rng) for _ in range(3)]  # never the digit alone, which would be a whole answer
    text += [_character(rng) if rng.random() > 0.15 else " " for _ in range(rng.randint(0, 57))]
    rng.shuffle(text)
    text.insert(rng.randint(0, len(text)), rng.choice(DIGITS)[value])
    return "".join(text), str(value)


def list_row(rng: random.Random) -> tuple[str, str]:
    item = str(rng.randint(1, 9))
    items = rng.choice(LIST_SEPARATORS).join([item] * rng.randint(1000, 3000))
    return rng.choice(LIST_SETTINGS).format(items), item


def false_positives(unicode_rows: int, list_rows: int, seed: int) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    rows = [unicode_row(rng) for _ in range(unicode_rows)] + [list_row(rng) for _ in range(list_rows)]
    config = VerifierConfig(extract="auto")
    scored = [(completion, answer, check_math(completion, answer, config)) for completion, answer in rows]
    return [(completion[:60], answer, check.extracted) for completion, answer, check in scored if check.correctness]


def test_generated_unicode_digits_and_long_lists_are_never_correct():
    assert false_positives(unicode_rows=2000, list_rows=200, seed=27) == []


@pytest.mark.slow
def test_ten_thousand_generated_rows_have_no_false_positive():
    """Budget: about a minute on 2 cores."""
    assert false_positives(unicode_rows=9000, list_rows=1000, seed=2700) == []


def test_the_generators_make_what_they_promise():
    rng = random.Random(0)
    text, value = unicode_row(rng)
    assert sum(char.isdecimal() for char in text) == 1 and not any("0" <= char <= "9" for char in text)
    assert unicodedata.decimal(next(char for char in text if char.isdecimal())) == int(value)
    items, item = list_row(rng)
    assert items.count(item) >= 1000
