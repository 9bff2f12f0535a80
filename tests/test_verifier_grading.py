"""Competition-grade grading (issue 27): each kind of completion the verifier used to misread, with its value.

verifier.extract=auto, as a user runs `grpo verify`: the completion as a model writes it, the reference as a
dataset holds it. The rows are written here for these tests (Math-Verify's own suite is measured by
scripts/grader_agreement.py, not copied).
"""

import subprocess
import sys
from pathlib import Path

import pytest

from grpo_cli.config import VerifierConfig
from grpo_cli.verifier.extract import extract_answer
from grpo_cli.verifier.math_check import check_math

REPO = Path(__file__).resolve().parents[1]


def verdict(completion: str, reference: str) -> str:
    return check_math(completion, reference, VerifierConfig(extract="auto")).reason


@pytest.mark.parametrize(
    ("completion", "read"),
    [
        # math-verify's order: no box, no marker, so the last math expression, LaTeX span or number, whichever ends last
        (r"The base is $5 \times 6 = 30$ square units and the height is 4, so the volume is 120", "120"),
        (r"The identity matrix is $\begin{pmatrix}1&0\\0&1\end{pmatrix}$.", r"\begin{pmatrix}1&0\\0&1\end{pmatrix}"),
        # an answer phrase stated as a clause reduces to its value
        ("Final Answer: The largest $n$ is 34.", "34"),
        ("Final Answer: Jane started growing Sphere 3 hours ago. I hope it is correct.", "3 hours ago"),
        (r"the answer is $x \in [-2,7]$", r"$x \in [-2,7]$"),
        # ... but not when the value cannot be read without a guess
        ("The answer is 5 or six.", "5 or six"),
        ("The answer is at least 5.", "at least 5"),
        ("The answer is 3 times 5.", "3 times 5"),
        # an answer phrase with math after the last box wins over it, as math-verify's "final answer is"
        (r"So $\boxed{255}$ for the second CD. Final Answer: The final answer is $10,455$. I hope it is correct.", "$10,455$"),
        (r"The final answer is $\boxed{7}$.", "7"),
        # an aside in words is not the answer; a computation in parentheses is
        (r"Thus the probability is $\frac{3}{8}$ (three good outcomes out of 8).", r"\frac{3}{8}"),
        ("for a speed of (2/3*6=4 miles per hour).", "4 miles per hour"),
        # the words after the last number are kept for its unit
        ("The box weighs 1.45 kg.", "1.45 kg"),
        ("So they make $10000 a day from patient visits", "$10000"),
    ],
)
def test_the_answer_of_a_whole_solution(completion, read):
    assert extract_answer(completion, "auto").answer == read


@pytest.mark.parametrize(
    ("completion", "reference", "expected"),
    [
        (r"The identity matrix is $ \begin{pmatrix}1 & 0 \\ 0 & 1\end{pmatrix} $.", r"\begin{pmatrix}1&0\\0&1\end{pmatrix}", "correct"),
        (r"Here is a zero matrix: $ \begin{pmatrix}0 & 0 \\0 & 0\end{pmatrix} $", r"\begin{bmatrix}0 & 0 \\ 0 & 0\end{bmatrix}", "correct"),
        (r"Special matrix: $ \left[\begin{array}{cc}1 & 2 \\3 & 4\end{array}\right] $", r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix}", "correct"),
        (r"The inverse is $\begin{pmatrix} 0.5 & 0.75 \\ 0.8333333 & 0.875 \end{pmatrix}$.", r"\begin{pmatrix} \frac12 & \frac34 \\ \frac56 & \frac78 \end{pmatrix}", "correct"),
        (r"The inverse is $\begin{pmatrix} 0.5 & 0.75 \\ 0.83 & 0.875 \end{pmatrix}$.", r"\begin{pmatrix} \frac12 & \frac34 \\ \frac56 & \frac78 \end{pmatrix}", "wrong"),
        # a sum or product of matrices is its value
        (r"The sum is $\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix} + \begin{pmatrix}5 & 6 \\ 7 & 8\end{pmatrix}$", r"\begin{pmatrix}6 & 8 \\ 10 & 12\end{pmatrix}", "correct"),
        (r"The sum is $\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix} + \begin{pmatrix}5 & 6 \\ 7 & 9\end{pmatrix}$", r"\begin{pmatrix}6 & 8 \\ 10 & 12\end{pmatrix}", "wrong"),
        (r"$\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}$", "[1, 2]", "correct"),
        ("[[1, 2], [3, 4]]", r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix}", "correct"),
        ("[[1, 2], [4, 3]]", r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix}", "wrong"),
    ],
)
def test_matrices_and_vectors_in_prose(completion, reference, expected):
    assert verdict(completion, reference) == expected


@pytest.mark.parametrize(
    ("completion", "reference", "expected"),
    [
        (r"$\boxed{(7,11),\ (11,7)}$", "(11,7)or(7,11)", "correct"),
        (r"$\boxed{(7,11)}$", "(11,7)or(7,11)", "wrong"),
        ("${1,3}$", "(1,3)", "correct"),  # unescaped braces only group: the list 1, 3 in order
        ("${1,3}$", "(3,1)", "wrong"),
        (r"$\boxed{1}\boxed{2}$", r"\boxed{1,2}", "correct"),
        (r"$\boxed{x = -5,\ p = \frac{14}{3}}$", r"-5, \frac{14}{3}", "correct"),
        (r"$\boxed{a_{37} = 19, \quad a_3 = 2}$", "a_3 = 2, a_{37} = 19", "correct"),  # names match in any order
        (r"$\boxed{a_{37} = 2, \quad a_3 = 19}$", "a_3 = 2, a_{37} = 19", "wrong"),
        (r"$\boxed{(x, y) = (5, 8) \quad \text{and} \quad (8, 5)}$", "(5, 8), (8, 5)", "correct"),
        (r"$\boxed{(3, 3)} \text{ for part (a) and } \boxed{(1, 1)}$", "(3, 3), (1, 1)", "correct"),
        (r"We get $\boxed{1}$ at first, but rechecking gives $\boxed{2}$.", "1, 2", "wrong"),  # a later box replaces
        # a repeated tuple counts once, as in math-verify's sets
        (r"$\boxed{(3,17,3,7), (17,3,3,7), (3,17,3,7)}$", "(17,3,3,7),(3,17,3,7)", "correct"),
        ("The solutions are $x = 2$ and $x = -3$.", "2, -3", "correct"),
        ("The solutions are $x = 2$ and $x = -3$.", "2", "wrong"),
    ],
)
def test_sets_tuples_and_lists_of_solutions(completion, reference, expected):
    assert verdict(completion, reference) == expected


@pytest.mark.parametrize(
    ("completion", "reference", "expected"),
    [
        (r"$x \in [-2,7]$", r"-2 \le x \le 7", "correct"),
        (r"$-2 \le x \le 7$", r"x \in [-2,7]", "correct"),
        (r"$x \in [-2,7]$", r"-2 \\le x \\le 7", "correct"),  # doubled backslashes, as JSON-escaped data has them
        (r"The solution is $-2 \\leq x \\leq 7$.", "[-2, 7]", "correct"),
        (r"The solution is $-2 \\le x \\lt 7$.", "[-2, 7]", "wrong"),
        (r"$\boxed{(0,1)}$", "0<f(x)<1", "correct"),
        (r"$\boxed{[0,1)}$", "0<f(x)<1", "wrong"),
        (r"$z \in \left[-\frac{3}{2}, -1\right] \cup \left[1, \frac{3}{2}\right]$", r"1\leq|z|\leq \frac{3}{2}", "correct"),
        (r"$z \in \left[1, \frac{3}{2}\right]$", r"1\leq|z|\leq \frac{3}{2}", "wrong"),
        ("$-x > -1$", "x < 1", "correct"),
        ("$x > -1$", "x < 1", "wrong"),
        (r"The solution is $x \le -3$ or $x \ge 2$.", r"(-\infty,-3]\cup[2,\infty)", "correct"),
        (r"$\boxed{[2, \infty) \cup (-\infty, -3]}$", r"(-\infty,-3]\cup[2,\infty)", "correct"),
        (r"$\boxed{(-\infty, 1) \cup (1, \infty)}$", r"x \neq 1", "correct"),
        (r"$\boxed{\{x \mid x > 1\}}$", r"(1, \infty)", "correct"),
        (r"$\boxed{\{x \mid x \ge 1\}}$", r"(1, \infty)", "wrong"),
        (r"$\boxed{\mathbb{R}}$", r"(-\infty, \infty)", "correct"),
        (r"$\boxed{\varnothing}$", r"\emptyset", "correct"),
    ],
)
def test_inequalities_and_intervals(completion, reference, expected):
    assert verdict(completion, reference) == expected


@pytest.mark.parametrize(
    ("completion", "reference", "expected"),
    [
        (r"$\sqrt3 $", r"\sqrt{3}", "correct"),
        (r"$\frac3{3} $", "1", "correct"),
        (r"$\cfrac{1}{3} $", "1/3", "correct"),
        (r"$\dfrac{1}{3}$", "1/3", "correct"),
        (r"$\cfrac{1}{4}$", "1/3", "wrong"),
        (r"$\boxed{\frac34i}$", r"\frac{3}{4}i", "correct"),
        ("$odd$", r"\text{odd}", "correct"),
        ("$Even$", r"\text{Even}", "correct"),
        ("$Even$", r"\text{odd}", "wrong"),
        (r"So $\boxed{\mathrm{E}}$ is correct.", "E", "correct"),
        (r"So $\boxed{\textbf{A}}$ is correct.", "A", "correct"),
        (r"So $\boxed{\textbf{B}}$ is correct.", "A", "wrong"),
    ],
)
def test_latex_shorthand_and_word_answers(completion, reference, expected):
    assert verdict(completion, reference) == expected


@pytest.mark.parametrize(
    ("completion", "reference", "expected"),
    [
        ("The total is 1 000.", "1000", "correct"),  # a space between groups of three separates thousands
        ("The total is 12 500 people.", "12500", "correct"),
        ("12 3", "123", "wrong"),  # not groups of three: two numbers
        ("It costs 1,000.99$", "1000.99", "correct"),
        (r"$\boxed{32, 349}$", "32349", "wrong"),  # a comma and a space: a list
        # our rule, a known disagreement with math-verify: a comma between digit groups of three separates
        # thousands; any other comma between digits is ambiguous (a decimal comma, or a list), so no number
        ("The value is 1000,99.", "1000.99", "wrong"),
        ("1,22", "1.22", "wrong"),
        ("1,22", "1, 22", "correct"),
    ],
)
def test_numbers_with_space_separators_and_decimal_commas(completion, reference, expected):
    assert verdict(completion, reference) == expected


@pytest.mark.parametrize(
    ("completion", "reference", "expected"),
    [
        ("x+1", "x+1", "correct"),
        ("x+1", "x+2", "wrong"),
        ("x^2", "x^2", "correct"),
        ("(1,2)", "(1,2)", "correct"),
        ("(1,2)", "(2,1)", "wrong"),
        ("3+2", "5", "correct"),
        ("(r+5)(r+5)", "(r+5)^2", "correct"),
        (r"$\boxed{(x-3)(x+2)}$", "(x+2)(x-3)", "correct"),
        ("x^2 + 2*x + 1", "x^2+2x+1", "correct"),
        ("f(x) = 2x + 3", "2x + 3", "correct"),
        ("f(x) = 2x + 3", "2x + 4", "wrong"),
        (r"\frac34i", r"\frac{3}{4}i", "correct"),
        (r"\left(x-2\right)", "(x-2)", "correct"),
        (r"\sec x", r"\frac1{\cos x}", "correct"),
        ("3.14159265", r"\pi", "correct"),
        ("3.14", r"\pi", "wrong"),
        ("1.41421356", r"\sqrt2", "correct"),
        (r"$\boxed{\begin{cases} x = 1 \\ y = 2 \end{cases}}$", "x=1, y=2", "correct"),
        (r"$\boxed{\begin{cases} x = 2 \\ y = 1 \end{cases}}$", "x=1, y=2", "wrong"),
        (r"\sin(x)=\frac{42}{59}", r"\cos(x)=\frac{42}{59}", "wrong"),  # two names that disagree
        (r"\sin(x)=\frac{42}{59}", r"\frac{42}{59}", "correct"),
        ("W(x)=1orW(x)=-1", "W(n) = 1, W(n) = -1", "correct"),  # f(x) and f(n) name one function
        (r"i\sqrt{3}", r"\sqrt{-3}", "correct"),  # i is the imaginary unit
        (r"e^{i\pi}", "-1", "correct"),
        ("1+2i", "2i+1", "correct"),
        ("1+2i", "1-2i", "wrong"),
    ],
)
def test_expressions_with_variables(completion, reference, expected):
    assert verdict(completion, reference) == expected


@pytest.mark.parametrize(
    ("completion", "reference"),
    [
        ("Answer $ \n 9 \n $", "9"),  # inline math cannot run across lines: no answer inside
        ("Answer \\( \n 9 \n \\)", "9"),
        ("It is either 4 or 5.", "5"),
        ("It is either 4 or 5.", "4"),
        (r"$\boxed{1} no no no no no \boxed{2}$", "1, 2"),
        (r"$\boxed{1:00}$", "12:00"),
        (r"\boxed{4}", r"4\sqrt{2}"),
        (r"$\boxed{f(2) = 5}$", "f(3) = 5"),
        (r"$\boxed{x^2 = 25}$", "5"),
        ("The answer is not 5.", "5"),
        ("The values are 1, 2, 3, 2000.", "2000"),
    ],
)
def test_false_positives(completion, reference):
    assert verdict(completion, reference) in ("wrong", "no_answer")


def test_answers_broken_across_lines_in_display_math_still_count():
    assert verdict("Answer \\[ \n 9 \n \\]", "9") == "correct"
    assert verdict("Answer $$ \n 9 \n $$", "9") == "correct"


@pytest.mark.parametrize("digit", ["௧", "๑", "۱", "١", "१", "１"])
def test_a_non_ascii_digit_counts_only_as_the_whole_answer(digit):
    assert verdict(f"ᚹ {digit} ⟁ ꧁", "1") in ("wrong", "no_answer")
    assert verdict(f"The code QX{digit}TB", "1") in ("wrong", "no_answer")
    assert verdict(f"$\\boxed{{{digit}}}$", "1") == "correct"
    assert verdict(f"The answer is {digit}{digit}.", "11") == "correct"


@pytest.mark.parametrize("separator", [",", ", ", ";", " and "])
def test_a_long_list_is_a_list_not_its_last_item(separator):
    items = separator.join(["1"] * 3000)
    for completion in (items, f"The values are {items}.", f"$\\boxed{{{items}}}$"):
        assert verdict(completion, "1") == "wrong"


def test_a_reference_that_is_a_worked_solution_is_read_by_its_box():
    solution = r"Solving for $x$ yields $x=1/5$, or $\boxed{20}$ percent."
    assert verdict(r"$\boxed{20 \%}$", solution) == "correct"
    assert verdict(r"$\boxed{25 \%}$", solution) == "wrong"
    assert verdict(r"$\boxed{1331}$", "1331 and 1728") == "wrong"  # a bare reference stays whole


def test_grader_agreement_reads_a_suite_s_labelled_rows_without_running_it(tmp_path):
    """scripts/grader_agreement.py on a suite written like Math-Verify's tests/: rows from parametrize lists
    (comments and other tests ignored, an f-string of math calls evaluated, a precision setting honoured)."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_cases.py").write_text(
        "import math\nimport pytest\n\n"
        "raise SystemExit('the suite must not run')\n\n"
        "@pytest.mark.parametrize('gold,pred,expected', [\n"
        "    ('$9$', 'The answer is $9$.', 1),\n"
        "    # ('$1$', 'commented out', 1),\n"
        "    ('$9$', 'Answer $ \\n 9 \\n $', 0),\n"
        "    ('1000.99', '1000,99', 1),\n"
        "    (f'{math.sqrt(2):.6f}', '$\\\\sqrt{2}$', 1),\n"
        "])\ndef test_rows(gold, pred, expected):\n    pass\n\n"
        "@pytest.mark.parametrize('gold,pred,expected,precision', [('$(\\\\frac{3}{5},\\\\frac{8}{3}]$', '$(0.6,2.6667]$', 1, 2)])\n"
        "def test_with_precision(gold, pred, expected, precision):\n    pass\n\n"
        "@pytest.mark.parametrize('pred,expected', [('A', ['a'])])\ndef test_other(pred, expected):\n    pass\n"
    )
    result = subprocess.run([sys.executable, "scripts/grader_agreement.py", str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "   3/4    test_cases.py::test_rows" in lines
    assert "   1/1    test_cases.py::test_with_precision" in lines
    assert "  1 0 test_cases.py::test_rows  '1000.99' | '1000,99'" in lines  # the decimal comma, our known disagreement
    assert lines[-1] == "agreement: 4/5 = 80.0% (verifier.extract=auto)"
