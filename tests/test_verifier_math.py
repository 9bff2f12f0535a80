"""Math answers: normalization and equivalence rules, checked in this process (the pool is tested apart).

Several tests pin where other graders go wrong (verl's strict GSM8K scorer, Qwen's and math-verify's
lenient ones) and where math-verify, which we use for LaTeX parsing and symbolic equivalence, is right.
"""

import builtins
import os

import pytest
from math_verify import parse, verify

from grpo_cli.config import VerifierConfig
from grpo_cli.verifier.math_check import check_math


def reason(predicted: str, reference: str, extract: str = "final_line") -> str:
    completion = f"Some working.\nFINAL: {predicted}" if extract == "final_line" else predicted
    return check_math(completion, reference, VerifierConfig(extract=extract)).reason


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
