"""Units in math answers: converted with pint when both sides carry a unit, dropped when they are words;
and the workers' warm start (pint and sympy ready before the first check)."""

import pytest

from grpo_cli.config import VerifierConfig
from grpo_cli.verifier import build_verifier
from grpo_cli.verifier.math_check import check_math
from grpo_cli.verifier.units import lookup


def reason(predicted: str, reference: str, rel_tol: float = 1e-6) -> str:
    return check_math(f"Working.\nFINAL: {predicted}", reference, VerifierConfig(extract="final_line", rel_tol=rel_tol)).reason


@pytest.mark.parametrize(
    ("predicted", "reference"),
    [
        ("1.45 kg", "1450 g"),  # was rejected: units were dropped, 1.45 is not 1450
        ("1450 g", "1.45 kg"),
        ("1450 grams", "1.45 kilograms"),
        ("3.5 kg", "3.5 kg"),
        ("3.5kg", "3.5 kg"),
        ("36 km/h", "10 m/s"),
        ("20 mph", "20 miles per hour"),
        ("20 minutes", r"\frac{1}{3} \text{ hours}"),
        (r"1.5 \text{ hours}", "90 minutes"),
        ("12 inches", "1 foot"),
        ("1 mile", "5280 feet"),
        (r"5 \text{ cm}^2", r"500 \text{ mm}^2"),
        ("5 cm²", "500 mm^2"),
        ("2 L", "2000 mL"),
        ("5 m", "500 cm"),
    ],
)
def test_the_same_dimension_is_converted(predicted, reference):
    assert reason(predicted, reference) == "correct"


def test_conversions_are_exact_so_rel_tol_zero_still_converts():
    assert reason("12 inches", "1 foot", rel_tol=0.0) == "correct"
    assert reason("36 km/h", "10 m/s", rel_tol=0.0) == "correct"
    assert reason("1.45 kg", "1450.001 g", rel_tol=0.0) == "wrong"


@pytest.mark.parametrize(
    ("predicted", "reference"),
    [
        ("3.5 g", "3.5 kg"),  # was accepted: units were dropped
        ("1.45 kg", "1451 g"),
        ("100000 g", "100.001 kg"),  # 1e-5 apart: outside rel_tol
        ("3.5 kg", "3.5 m"),  # different dimensions never match
        (r"5 \text{ cm}^2", r"5 \text{ cm}"),
        ("10 m/s", "10 m"),
        ("2 hours", "2 km"),
        ("1.5", "90 minutes"),  # a bare number is read in the other side's unit
    ],
)
def test_different_values_or_dimensions_never_match(predicted, reference):
    assert reason(predicted, reference) == "wrong"


@pytest.mark.parametrize(
    ("predicted", "reference"),
    [
        ("3.5", "3.5 kg"),  # a bare number is judged in the gold's unit
        ("3.5 kg", "3.5"),
        ("90", "90 minutes"),
        ("12 boxes", "12"),  # count nouns are words, dropped
        ("12", "12 boxes"),
        ("7 crates", "7 boxes"),
        ("3 cats", "3"),  # pint reads "cats" as centi-technical-atmospheres; we do not
        ("3 points", "3"),
        ("5 bags", "5 kg"),
        ("$18", "18 dollars"),
        ("12 square units", "12"),
    ],
)
def test_words_that_are_no_unit_are_dropped(predicted, reference):
    assert reason(predicted, reference) == "correct"


@pytest.mark.parametrize(
    ("predicted", "reference"),
    [("5 apples or 6", "5"), ("5 kg or 6", "5"), ("5 or more", "5"), ("5 m 6", "5"), ("5 kg 600 g", "5 kg")],
)
def test_no_answer_hides_in_its_unit(predicted, reference):
    assert reason(predicted, reference) == "wrong"


def test_only_everyday_units_are_units():
    assert lookup("km per hour").scale == lookup("km/h").scale == pytest.approx(5 / 18)
    assert lookup("feet").scale * 12 == lookup("inch").scale * 144
    for word in ["boxes", "cats", "points", "bags", "units", "dollars", "percent", "degrees", "dozen", "people"]:
        assert lookup(word) is None, word
    assert lookup("__import__('os').system('x') kg") is None


def test_first_checks_in_fresh_workers_are_well_inside_the_default_timeout():
    """The forkserver builds pint's registry and runs one check of each kind (warm.py): without that, a
    worker's first symbolic check takes about 1.1 s here, a timeout at the default timeout_s = 1."""
    pairs = [
        ("FINAL: 1.45 kg", "1450 g"),
        ("FINAL: 36 km/h", "10 m/s"),
        ("FINAL: 3.5 g", "3.5 kg"),
        (r"FINAL: (a+b)^2", "a^2+2ab+b^2"),
        (r"FINAL: 2x+4y=6", "x+2y-3=0"),
    ]
    with build_verifier(VerifierConfig(extract="final_line", timeout_s=1.0, num_workers=2)) as verifier:
        scores = verifier.score([p for p, _ in pairs], [g for _, g in pairs])
    assert [s.reason for s in scores] == ["correct", "correct", "wrong", "correct", "correct"]


@pytest.mark.parametrize(
    ("predicted", "reference", "expected"),
    [
        (r"36\pi \text{ cm}^3", r"36\pi", "correct"),  # math-verify's parser would read c*m^3
        (r"36\pi \text{ cm}^3", r"36000\pi \text{ mm}^3", "correct"),
        (r"36\pi \text{ cm}^3", r"36\pi \text{ cm}^2", "wrong"),
        (r"5\sqrt{2} \text{ meters}", r"500\sqrt{2} \text{ cm}", "correct"),
        (r"5\sqrt{2} \text{ meters}", r"5\sqrt{2} \text{ seconds}", "wrong"),
        (r"4\sqrt{3}\text{ m}", r"4\sqrt{3} \text{ cm}", "wrong"),  # one-letter SI units too
        (r"4\sqrt{3}\text{ m}", r"400\sqrt{3} \text{ cm}", "correct"),
    ],
)
def test_an_expression_carries_its_unit_like_a_number(predicted, reference, expected):
    assert reason(predicted, reference) == expected
