"""Answer extraction: each mode on real-looking completions, and the untrusted-text edge cases."""

import time

import pytest

from grpo_cli.verifier.extract import Extraction, extract_answer, last_boxed

MODES = ["final_line", "boxed", "gsm8k", "answer_is", "last_number", "auto"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("text", ["", "   \n\t \n"])
def test_empty_or_whitespace_has_no_answer(mode, text):
    assert extract_answer(text, mode) is None


def test_final_line_takes_the_last_marker_line():
    text = "Try: 3 + 4 = 7.\nFINAL: 7\nWait, I forgot the crate.\nFINAL: 8"
    assert extract_answer(text, "final_line") == Extraction("8", well_formed=False)


def test_final_line_is_well_formed_only_when_single_and_last():
    assert extract_answer("12 boxes of 3\nFINAL: 36\n", "final_line") == Extraction("36", well_formed=True)
    assert extract_answer("FINAL: 36\nhope that helps", "final_line") == Extraction("36", well_formed=False)


def test_final_line_needs_the_marker_at_the_start_of_a_line():
    assert extract_answer("so my FINAL: 36", "final_line") is None
    assert extract_answer("  FINAL:   36  ", "final_line") == Extraction("36", well_formed=True)
    assert extract_answer("ANSWER=36", "final_line", marker="ANSWER=") == Extraction("36", well_formed=True)


def test_an_empty_last_marker_line_is_no_answer_even_after_a_full_one():
    assert extract_answer("FINAL: 36\nFINAL:", "final_line") is None


def test_boxed_takes_the_last_complete_box_with_nested_braces():
    text = r"First \boxed{1}, then $\boxed{\frac{1}{2}}$ and finally \boxed{\frac{\sqrt{3}}{2}} and \boxed{5"
    assert extract_answer(text, "boxed") == Extraction(r"\frac{\sqrt{3}}{2}", True)


def test_five_thousand_nested_braces_are_read_in_linear_time():
    deep = r"\boxed{" + "{" * 5000 + "7" + "}" * 5000 + "}"
    start = time.perf_counter()
    assert last_boxed(deep) == "{" * 5000 + "7" + "}" * 5000
    assert last_boxed(r"\boxed{" * 5000) is None  # 5,000 boxes, none closed
    assert time.perf_counter() - start < 1.0


def test_gsm8k_reads_after_the_last_hashes():
    text = "She sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18"
    assert extract_answer(text, "gsm8k") == Extraction("18", True)
    assert extract_answer("#### 17\n#### 18.", "gsm8k") == Extraction("18.", False)


def test_answer_is_stops_at_the_end_of_the_sentence():
    text = "First I thought the answer is 5. Then I checked: the final answer is 3.5 kg. Done."
    assert extract_answer(text, "answer_is") == Extraction("3.5 kg", True)


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("It costs $1,234.50 in total", "$1,234.50"),
        ("about 1 1/2 cups", "1 1/2"),
        ("pages 3-5, then -4 degrees", "-4"),
        ("growth of 25 %", "25 %"),
        ("ratio 3/4.", "3/4"),
    ],
)
def test_last_number(text, number):
    assert extract_answer(text, "last_number") == Extraction(number, True)


def test_auto_prefers_a_box_then_the_latest_phrase_then_the_last_math_expression():
    assert extract_answer(r"The answer is 4. Actually \boxed{5}. Or 6.", "auto").answer == "5"
    assert extract_answer("The answer is 4.\nFINAL: 5\nso 6 it is", "auto").answer == "5"
    assert extract_answer("FINAL: 5\nSo the answer is 6.", "auto").answer == "6"
    # As math-verify: LaTeX spans and plain numbers are one target, and the one that ends last wins.
    assert extract_answer(r"We get $x = \frac{1}{2}$, so the volume is 120", "auto") == Extraction("120", False)
    assert extract_answer(r"The base is 5 by 6, so the ratio is $\frac{5}{6}$.", "auto") == Extraction(r"\frac{5}{6}", False)
    assert extract_answer("I paid $18 and $20 for 2 items", "auto") == Extraction("2 items", False)  # with its words


def test_chains_of_boxes_are_read_in_linear_time():
    start = time.perf_counter()
    assert extract_answer(", ".join([r"\boxed{1}"] * 5000), "auto").answer == "1"
    assert extract_answer((" " * 500).join([r"\boxed{1}", r"\boxed{2}"] * 100), "auto").answer == "1, 2"
    assert time.perf_counter() - start < 1.0


def test_auto_stays_linear_on_unclosed_latex_delimiters():
    start = time.perf_counter()
    assert extract_answer("\\(" * 5000 + " 7", "auto").answer == "7"
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        (r"\boxed{2}, \boxed{5}, \boxed{9}", "2, 5, 9"),
        (r"$\boxed{2}$, $\boxed{5}$ and $\boxed{9}$.", "2, 5, 9"),
        (r"$x = \boxed{2}$, $y = \boxed{3}$", "x = 2, y = 3"),
        (r"\boxed{5} \quad \boxed{5}", "5"),  # a repeated box counts once
        (r"We get \boxed{4}. Checking again, the total is \boxed{5}.", "5"),  # prose between: the last box alone
        (r"(a) \boxed{3} (b) \boxed{4}", "4"),
    ],
)
def test_boxes_one_after_another_are_one_answer(text, answer):
    assert extract_answer(text, "boxed") == Extraction(answer, True)
    assert extract_answer(text, "auto") == Extraction(answer, True)


@pytest.mark.parametrize(
    ("text", "number"),
    [
        (r"so x is \frac{7}{3}", r"\frac{7}{3}"),
        (r"so x is -\dfrac{7}{3} here", r"-\dfrac{7}{3}"),
        (r"in all 4,\! 321,\! 000 people", r"4,\! 321,\! 000"),
        (r"about 1\,000 m", r"1\,000"),
        ("The code is QX7TB, or 3x2", None),  # digits inside words are no numbers
        ("it weighs 7kg", "7"),
    ],
)
def test_last_number_reads_latex_fractions_and_thin_spaces_but_no_digits_inside_words(text, number):
    found = extract_answer(text, "last_number")
    assert (found.answer if found else None) == number


def test_prices_are_no_latex_span():
    """pandoc's rule: no space inside the dollars, no digit after the closing one."""
    text = "1. Apples: 4 x $2 = $8\n2. Bread: $3\n3. Total: $8 + $3 = $11\n\nThe total cost is **$11**."
    assert extract_answer(text, "auto").answer == "$11"
    assert extract_answer(r"so the area is $x^2 + 1$ and that is all", "auto").answer == "x^2 + 1"
