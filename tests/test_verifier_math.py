"""Math answers: normalization and equivalence rules, checked in this process (the pool is tested apart).

Several tests pin where other graders go wrong (verl's strict GSM8K scorer, Qwen's and math-verify's
lenient ones) and where math-verify, which we use for LaTeX parsing and symbolic equivalence, is right.
"""

import builtins
import os
import time

import pytest
from math_verify import parse, verify

from grpo_cli.config import VerifierConfig
from grpo_cli.verifier.math_check import check_math


def reason(predicted: str, reference: str, extract: str = "final_line") -> str:
    completion = f"Some working.\nFINAL: {predicted}" if extract == "final_line" else predicted
    return check_math(completion, reference, VerifierConfig(extract=extract)).reason


def boxed_reason(predicted: str, reference: str) -> str:
    return reason(rf"The result follows: $\boxed{{{predicted}}}$.", reference, extract="auto")


@pytest.mark.parametrize("predicted", ["#### 18.", "#### $18", "#### 18.00", "#### 18 dollars"])
def test_gsm8k_answers_in_everyday_forms_score_where_strict_scorers_do_not(predicted):
    assert reason(predicted, "18", extract="gsm8k") == "correct"


def test_thousands_separators():
    assert reason("#### 2,125", "2125", extract="gsm8k") == "correct"
    assert reason("1,000,000", "1000000") == "correct"
    assert reason("1{,}000", "1000") == "correct"
    assert reason("1,2", "12") == "wrong"  # not a thousands separator: a list of two numbers


@pytest.mark.parametrize(
    ("predicted", "reference"),
    [
        ("42", "42"),
        ("0.75", "3/4"),
        ("12.5 kg", "12.5 kg"),
        ("12.5", "12.5 kg"),
        ("12.5kg", "12.5 kg"),
        ("3/2", "1 1/2"),
        ("1.5", "1 1/2"),
        ("-1 1/2", "-1.5"),
        ("18", "$18.00"),
        ("$18.00", "18 dollars"),
        ("25%", "25%"),
        ("12 boxes", "12"),
        ("\u22123", "-3"),
    ],
)
def test_harbor_answer_forms(predicted, reference):
    assert reason(predicted, reference) == "correct"


@pytest.mark.parametrize("form", ["0.5", "1/2", r"\frac{1}{2}", r"\dfrac12", "50%", r"50\%", "50 percent", r"$\frac{1}{2}$", "0.50"])
def test_equivalent_forms_of_one_half(form):
    assert reason(form, "1/2") == "correct"
    assert reason(form, r"\frac{1}{2}") == "correct"


def test_percent_reads_as_x_over_100_or_x_only_when_one_side_has_the_sign():
    assert reason("50", "50%") == "correct"  # "what percent ...? 50"
    assert reason("0.5", "50%") == "correct"
    assert reason("0.5%", "50%") == "wrong"
    assert reason("0.5", "50") == "wrong"  # Qwen's grader accepts this: it tries x*100 and x/100
    assert reason("50", "0.5") == "wrong"


def test_integers_and_terminating_decimals_compare_exactly():
    assert reason("100000", "100001") == "wrong"  # 1e-5 apart: Qwen's rel_tol=1e-4 accepts it
    assert reason("1450001", "1,450,000") == "wrong"  # 7e-7 apart: inside rel_tol, still a different integer
    assert reason("2^{20}", "1048577") == "wrong"
    assert reason("0", "0.0000001") == "wrong"
    assert reason("12.50", "12.5") == "correct"


def test_a_decimal_approximates_a_value_without_finite_expansion_within_rel_tol():
    assert reason("3.14", r"\pi") == "wrong"
    assert reason("3.14159265", r"\pi") == "correct"  # within rel_tol = 1e-6
    assert reason("0.3333333", "1/3") == "correct"
    assert reason("0.3333", "1/3") == "wrong"
    assert reason("1.4142136", r"\sqrt{2}") == "correct"
    assert reason(r"\frac{1}{2006!}", r"\frac{1}{2004!}") == "wrong"  # no absolute tolerance


def test_math_verify_rounds_tiny_numbers_to_zero_so_we_compare_them_ourselves():
    assert verify(parse(r"$\frac{1}{2004!}$"), parse(r"$\frac{1}{2006!}$"))  # math-verify: equal
    assert reason(r"\frac{1}{2006!}", r"\frac{1}{2004!}") == "wrong"


def test_a_one_element_answer_never_matches_two_elements():
    assert verify(parse("1728"), parse("1331 and 1728"))  # math-verify keeps the last number
    assert reason("1331 and 1728", "1728") == "wrong"
    assert reason("1728", "1331 and 1728") == "wrong"
    assert reason("1728 and 1331", "1331, 1728") == "correct"  # a list is a multiset


def test_brackets_must_match_and_tuples_keep_order():
    assert reason("[0,9)", "(0,9)") == "wrong"
    assert reason(r"\left(0, 9\right)", "(0,9)") == "correct"
    assert reason("(1,2)", "(2,1)") == "wrong"
    assert reason(r"\{1, 2\}", r"\{2, 1\}") == "correct"
    assert reason(r"(-\infty, 3]", r"(-\infty, 3]") == "correct"


def test_mixed_numbers_which_math_verify_reads_as_their_whole_part():
    assert parse("1 1/2")[0] == 1
    assert reason("1 1/2", "1.5") == "correct"
    assert reason(r"1\frac{1}{2}", "1.5") == "correct"


def test_power_towers_are_read_from_the_top():
    assert parse("$2^3^2$")[0].doit() == 64  # the LaTeX parser reads (2^3)^2
    assert reason("2^3^2", "512") == "correct"
    assert reason("2**3**2", "512") == "correct"


@pytest.mark.parametrize(
    ("predicted", "reference"),
    [
        ("1.5e3", "1500"),
        (r"1.5 \times 10^{3}", "1500"),
        (r"\sqrt{8}", r"2\sqrt{2}"),
        (r"10\text{ kg}", "10"),
        ("x = 5", "5"),
        ("(x+1)^2", "x^2+2x+1"),
        (r"\boxed{7}", "7"),
        ("**7**", "7"),
        ("90^\\circ", "90"),
        ("Tuesday", "tuesday"),
    ],
)
def test_latex_scientific_and_symbolic_forms(predicted, reference):
    assert reason(predicted, reference) == "correct"


@pytest.mark.parametrize("predicted", [r"\frac{1}{", "1/0", r"\sqrt{", "((1)", "}{", "2x"])
def test_malformed_or_undefined_answers_are_wrong_not_errors(predicted):
    assert reason(predicted, "2") == "wrong"


def test_no_extractable_answer_is_a_parse_failure():
    config = VerifierConfig(extract="final_line")
    for completion in ["I give up", "FINAL:", "FINAL: ****"]:  # no marker, nothing after it, nothing left when cleaned
        assert check_math(completion, "2", config).reason == "no_answer"
        assert check_math(completion, "2", config).correctness == 0.0
    assert reason("", "2", extract="auto") == "no_answer"


def test_model_text_never_reaches_eval_or_exec(monkeypatch, tmp_path):
    """verl's prime_math passed answers to eval (a CVE); sympy's parse_expr does the same."""
    monkeypatch.chdir(tmp_path)
    calls = []

    def recording(real):
        def wrapper(source, *args, **kwargs):
            calls.append(source)
            return real(source, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(builtins, "eval", recording(builtins.eval))
    monkeypatch.setattr(builtins, "exec", recording(builtins.exec))
    payload = "__import__('os').system('touch pwned')"
    for completion in [f"FINAL: {payload}", f"\\boxed{{{payload}}}", f"The answer is {payload}.", f"$ {payload} $", "FINAL: 2**2 + (lambda: 1)()"]:
        for extract in ("final_line", "auto"):
            check_math(completion, "4", VerifierConfig(extract=extract))
    assert not [c for c in calls if "pwned" in str(c) or "lambda" in str(c)]
    assert not os.path.exists(tmp_path / "pwned")


def test_empty_reference_is_an_error():
    with pytest.raises(ValueError, match="reference answer is empty"):
        check_math("FINAL: 1", "  ", VerifierConfig(extract="final_line"))


# ---- issue 14: what the verifier got wrong on real model outputs, each with the value it must get ----------


@pytest.mark.parametrize(
    ("predicted", "reference", "expected"),
    [
        ("21/4", "2 1/4", "wrong"),  # spaces were deleted before comparing: "2 1/4" read as "21/4"
        ("12 3", "123", "wrong"),
        ("11/2 hours", "1 1/2 hours", "wrong"),
        ("9/4", "2 1/4", "correct"),
        ("2.25", "2 1/4", "correct"),
        ("2 1/4", "9/4", "correct"),
        ("1 1/2 hours", "1.5 hours", "correct"),
    ],
)
def test_spaces_between_digits_are_kept(predicted, reference, expected):
    assert reason(predicted, reference) == expected


@pytest.mark.parametrize(
    ("completion", "reference"),
    [
        (r"So x is \frac{7}{3}", "7/3"),  # was read as 3, the last number
        (r"Hence the ratio is \dfrac{7}{3}", r"\frac{7}{3}"),
        (r"There are 4,\! 321,\! 000 ways", "4321000"),
        (r"\boxed{4,\! 321,\! 000}", "4321000"),
        (r"\boxed{56,\!789}", "56789"),
        (r"\boxed{1\,000}", "1000"),
        (r"$\boxed{1{,}000{,}000}$", "10^6"),
    ],
)
def test_latex_fractions_outside_math_mode_and_thin_spaces_in_numbers(completion, reference):
    assert reason(completion, reference, extract="auto") == "correct"


def test_thin_spaces_do_not_join_numbers_that_are_no_thousands_group():
    assert reason(r"\boxed{4,\! 32}", "432", extract="auto") == "wrong"
    assert reason(r"\boxed{1\,00}", "100", extract="auto") == "wrong"


@pytest.mark.parametrize("reference", [r"\{2,5,9\}", "2, 5, 9", "9, 5, 2"])
@pytest.mark.parametrize(
    "completion",
    [r"\boxed{2}, \boxed{5}, \boxed{9}", r"$\boxed{2}$, $\boxed{5}$ and $\boxed{9}$", r"\boxed{2} \text{ or } \boxed{5} \text{ or } \boxed{9}"],
)
def test_several_boxes_are_one_answer(completion, reference):
    assert reason(completion, reference, extract="auto") == "correct"
    assert reason(completion, reference, extract="boxed") == "correct"


def test_several_boxes_are_no_way_to_list_candidates():
    assert reason(r"\boxed{2}, \boxed{5}, \boxed{9}", "5", extract="auto") == "wrong"
    assert reason(r"\boxed{5} or maybe \boxed{6}", "5", extract="auto") == "wrong"  # "or maybe" is no separator: 6 alone
    assert reason(r"\boxed{5} or \boxed{6}", "5", extract="auto") == "wrong"
    assert reason(r"First \boxed{4}. Checking the work again gives \boxed{5}.", "5", extract="auto") == "correct"


@pytest.mark.parametrize(
    ("predicted", "reference"),
    [(r"\text{prime}", "prime"), ("Prime", r"\text{prime}"), (r"\textbf{No}", "no"), (r"\text{Yes}", "YES"), (r"\text{(C)}", "C")],
)
def test_text_answers_ignore_case_and_text_commands(predicted, reference):
    assert boxed_reason(predicted, reference) == "correct"


def test_text_answers_are_not_lists_in_disguise():
    assert reason(r"\boxed{\text{yes and no}}", "yes", extract="auto") == "wrong"


@pytest.mark.parametrize(
    ("predicted", "reference", "expected"),
    [
        ("(a,b)=(4,1)", "(4,1)", "correct"),
        ("(a,b)=(4,1)", "(1,4)", "wrong"),
        ("x=2,y=3; x=3,y=2", "(2,3),(3,2)", "correct"),
        (r"x=2, y=3 \text{ or } x=3, y=2", "(3,2),(2,3)", "correct"),
        ("(x, y) = (2, 3), (3, 2)", "(3,2),(2,3)", "correct"),
        ("x=2,y=3; x=3,y=2", "(2,3)", "wrong"),  # a partial set scores 0
        ("a = 5, b = 6", "(5, 6)", "correct"),
        (r"x = 2 \text{ and } y = 3", "(2, 3)", "correct"),
        ("a = 5, b = 6", "5", "wrong"),
        (r"x = 5 \text{ or } x = 6", "5", "wrong"),
        (r"x = 5 \text{ or } x = 6", "5, 6", "correct"),
        ("k = \\frac{1}{2}", "0.5", "correct"),
        (r"x = 2 \cdot 3 = 6", "6", "correct"),
        ("5 = 6", "6", "wrong"),  # a false statement, whatever its last side says
        ("x = 5 = 6", "6", "wrong"),
    ],
)
def test_named_tuples_assignments_and_solution_sets(predicted, reference, expected):
    assert boxed_reason(predicted, reference) == expected


@pytest.mark.parametrize(
    ("predicted", "reference", "expected"),
    [
        (r"(5,3) \text{ or } (3,5)", "(3,5), (5,3)", "correct"),
        (r"4, 9 \text{ or } 16", "4,9,16", "correct"),
        ("16, 4, 9", "4,9,16", "correct"),
        ("4, 9", "4,9,16", "wrong"),
        ("4, 9, 16, 25", "4,9,16", "wrong"),
        (r"\{(5,3), (3,5)\}", "(3,5), (5,3)", "correct"),
        ("(5,3)", "(3,5)", "wrong"),  # a tuple keeps its order
        ("[1, 4)", "(1, 4]", "wrong"),  # an interval keeps its brackets
        (r"\pm 1", "-1, 1", "correct"),
        (r"\frac{-1 \pm \sqrt{5}}{2}", r"\frac{-1+\sqrt5}{2}, \frac{-1-\sqrt5}{2}", "correct"),
        ("1", r"\pm 1", "wrong"),
    ],
)
def test_solution_lists_are_unordered_and_intervals_are_exact(predicted, reference, expected):
    assert boxed_reason(predicted, reference) == expected


@pytest.mark.parametrize(
    ("predicted", "reference", "expected"),
    [
        (r"x \in [1,4]", "[1, 4]", "correct"),
        (r"1 \le x \le 4", "[1, 4]", "correct"),
        (r"x \in [1,4]", r"1 \leq x \leq 4", "correct"),
        ("-5 < t < 8", "(-5, 8)", "correct"),
        ("8 > t > -5", "(-5, 8)", "correct"),
        ("-5 < t \\le 8", "(-5, 8)", "wrong"),
        (r"x \in [1,4]", "(1, 4]", "wrong"),
        (r"x \ge 0", r"[0, \infty)", "correct"),
        (r"x < 3", r"(-\infty, 3)", "correct"),
        ("3 > x", r"(-\infty, 3)", "correct"),
        (r"x < -2 \text{ or } x > 3", r"(-\infty, -2) \cup (3, \infty)", "correct"),
        (r"(-\infty, -2) \cup (3, \infty)", r"(-\infty, -2] \cup (3, \infty)", "wrong"),
    ],
)
def test_inequalities_are_intervals(predicted, reference, expected):
    assert boxed_reason(predicted, reference) == expected


PMATRIX = r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}"


@pytest.mark.parametrize(
    ("predicted", "reference", "expected"),
    [
        (PMATRIX, r"\begin{bmatrix} 1 & 2 \\ 3 & 4 \end{bmatrix}", "correct"),
        (r"\left[\begin{array}{cc} 1 & 2 \\ 3 & 4 \end{array}\right]", PMATRIX, "correct"),
        (r"\begin{pmatrix} 1 & 2 \\ 4 & 3 \end{pmatrix}", PMATRIX, "wrong"),
        (r"\begin{pmatrix} 1 & 3 \\ 2 & 4 \end{pmatrix}", PMATRIX, "wrong"),  # the transpose
        (r"\begin{pmatrix} 1 & 2 & 3 & 4 \end{pmatrix}", PMATRIX, "wrong"),
        (r"\begin{pmatrix} 0.3333333 \\ 1 \end{pmatrix}", r"\begin{pmatrix} \frac{1}{3} \\ 1 \end{pmatrix}", "correct"),
        (r"\begin{pmatrix} 0.33 \\ 1 \end{pmatrix}", r"\begin{pmatrix} \frac{1}{3} \\ 1 \end{pmatrix}", "wrong"),
        (r"\begin{pmatrix} 100000 \\ 1 \end{pmatrix}", r"\begin{pmatrix} 100001 \\ 1 \end{pmatrix}", "wrong"),
        (r"\begin{pmatrix} -1 \\ 2 \end{pmatrix}", "(-1, 2)", "correct"),  # a vector is the tuple of its entries
        (r"\begin{pmatrix} -1 \\ 2 \end{pmatrix}", "(2, -1)", "wrong"),
    ],
)
def test_matrices_compare_entry_by_entry_with_the_scalar_rules(predicted, reference, expected):
    assert boxed_reason(predicted, reference) == expected


@pytest.mark.parametrize(
    ("predicted", "reference", "expected"),
    [
        ("3x-6y+2=0", r"y=\frac{1}{2}x+\frac{1}{3}", "correct"),
        ("-3x+6y-2=0", "3x-6y+2=0", "correct"),
        ("3x-6y+3=0", "3x-6y+2=0", "wrong"),
        ("y = -2x + 5", "2x + y = 5", "correct"),
        ("y=2x+5", "y=2x+6", "wrong"),
        ("2x+5", "y=2x+5", "correct"),  # "y = ..." against its right side
        ("0 = 0", "y=2x+3", "wrong"),
        ("y = y", "y=2x+3", "wrong"),
    ],
)
def test_equations_are_equal_up_to_rearrangement_and_scaling(predicted, reference, expected):
    assert boxed_reason(predicted, reference) == expected


@pytest.mark.parametrize(
    ("completion", "reference"),
    [
        ("The code is QX7TB.", "7"),  # a digit inside a word is no number
        (r"\boxed{QX7TB}", "7"),
        (r"\boxed{0.5}", "50"),
        (r"\boxed{3.14}", r"\pi"),
        (r"\boxed{100000}", "100001"),
        (r"\boxed{\frac{1}{2006!}}", r"\frac{1}{2004!}"),
        (r"\boxed{1331}", "1331 and 1728"),
        (r"\boxed{5.0000001}", "5"),
        (r"\boxed{2.333}", "7/3"),
        (r"\boxed{x^2 = 25}", "5"),
        (r"\boxed{x \in \{5, 6\}}", "5"),
        (r"\boxed{\infty}", "5"),
        (r"\boxed{5 \text{ or } 6}", "5"),
        ("The answer is 5 or six.", "5"),
        ("The answer is 5 and more.", "5"),
        (r"\boxed{5 \text{ (or } 6)}", "6"),
        (r"\boxed{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}", "5"),
        (r"\boxed{7 \text{ and } 7}", "7"),
        (r"\boxed{6 \text{ (which is } 5)}", "5"),
        (r"\boxed{5 \pm 1}", "5"),
        (r"\boxed{\text{the answer is between 4 and 6}}", "5"),
        (r"\boxed{" + "+".join(["x"] * 400) + "}", "400"),  # a huge expression is compared as text
        (r"\boxed{0 = 0 \cdot y}", "y=2x+3"),  # equations true for everything
        (r"\boxed{2y = 2y}", "y=2x+3"),
        (r"\boxed{y=2x+3 \text{ or } y=2x}", "y=2x+3"),
        (r"\boxed{5.5 \pm 0.5}", "5"),
        (r"\boxed{[4, 6]}", "5"),
        (r"\boxed{4 < x < 6}", "5"),
        (r"\boxed{\begin{pmatrix} 1 \text{ or } 2 \\ 3 \end{pmatrix}}", r"\begin{pmatrix} 1 \\ 3 \end{pmatrix}"),
        (r"\boxed{\text{yes or no}}", "yes"),
        (r"\boxed{3.5 \text{ kg or } 3.5 \text{ g}}", "3.5 kg"),
        (r"\boxed{3500 \text{ g}}", "3.5"),  # a bare gold is read in the prediction's unit: 3500 g is not 3.5 g
    ],
)
def test_no_new_false_positives(completion, reference):
    assert reason(completion, reference, extract="auto") in ("wrong", "no_answer")


def test_a_huge_answer_is_judged_quickly():
    start = time.perf_counter()
    assert reason(r"\boxed{" + "1+" * 3000 + "1}", "3001", extract="auto") == "wrong"
    assert reason(r"\boxed{" + ", ".join(str(i) for i in range(2000)) + "}", "5", extract="auto") == "wrong"
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize(
    ("predicted", "reference", "expected"),
    [
        (r"0.\overline{3}", r"\frac13", "correct"),
        (r"0.1\overline{6}", r"\frac16", "correct"),
        (r"1.\overline{142857}", r"\frac87", "correct"),
        (r"0.\overline{3}", "0.3", "wrong"),
        (r"5\text{.}", "5", "correct"),
        (r"\approx 5", "5", "correct"),
        (r"\approx 3.14", r"\pi", "wrong"),
        (r"12\mathrm{~cm}", "12", "correct"),
        ("x = 5, x = 5", "5", "wrong"),  # a list of two, however alike
    ],
)
def test_repeating_decimals_and_presentation_leftovers(predicted, reference, expected):
    assert boxed_reason(predicted, reference) == expected


def test_a_subscript_digit_before_a_space_is_no_spaced_number():
    assert boxed_reason(r"\log_2 3", r"\frac{\ln 3}{\ln 2}") == "correct"
    assert boxed_reason("12 3", "36") == "wrong"


@pytest.mark.parametrize(
    ("predicted", "reference", "expected"),
    [
        (r"\textbf{(C)}\ 12", r"\textbf{(C)}\ 12", "correct"),  # AMC answers in NuminaMath
        (r"\textbf{(C)}\ 12", "C", "correct"),
        ("C", r"\textbf{(C)}\ 12", "correct"),
        (r"\text{(c)}", r"\textbf{(C)}\ 12", "correct"),
        ("12", r"\textbf{(C)}\ 12", "correct"),
        (r"(C)\ \frac{1}{2}", r"\textbf{(C) }\frac12", "correct"),
        (r"\textbf{(B)}\ 12", r"\textbf{(C)}\ 12", "wrong"),
        (r"\textbf{(C)}\ 13", r"\textbf{(C)}\ 12", "wrong"),
        ("13", r"\textbf{(C)}\ 12", "wrong"),
        ("A", "5", "wrong"),  # a letter is never a value
        (r"(A)\ 5 \text{ or } (B)\ 6", "A", "wrong"),  # two choices are a list
        (r"(A) \text{ or } (B)", "A", "wrong"),
        ("A, B", "A", "wrong"),
    ],
)
def test_multiple_choice_answers_compare_by_letter_or_by_value(predicted, reference, expected):
    assert boxed_reason(predicted, reference) == expected


def test_math_verify_never_arms_its_signal_timeout(monkeypatch):
    """math-verify's own timeout is signal.alarm, which shares one timer with the pool's SIGALRM (setitimer):
    armed inside a check it would cancel the pool's timeout. Every call must run without it."""
    import signal

    armed = []
    monkeypatch.setattr(signal, "alarm", lambda seconds: armed.append(("alarm", seconds)))
    monkeypatch.setattr(signal, "signal", lambda number, handler: armed.append(("signal", number)))
    for predicted, reference in [
        ("(x+1)^2", "x^2+2x+1"), (r"\sin(x)=\frac{42}{59}", r"\cos(x)=\frac{42}{59}"), (r"1 \le |z| \le 2", r"[-2,-1] \cup [1,2]"),
        (r"x \in [-2,7]", r"-2 \le x \le 7"), (r"\begin{pmatrix}1 & 2\end{pmatrix} + \begin{pmatrix}3 & 4\end{pmatrix}", "(4, 6)"),
    ]:
        assert reason(predicted, reference) in ("correct", "wrong")
    assert armed == []
