"""Custom rewards for tests/test_verifier_edge_cases.py (imported by the verifier's workers by name)."""


def ratio_of_digits(completion: str, answer: str) -> float:
    """Divides by the number of digits: ZeroDivisionError on a completion without any."""
    return 1 / sum(c.isdigit() for c in completion)


def length_bonus(completion: str, answer: str) -> float:
    return min(len(completion), 100) / 1000
