"""What a verifier says about one completion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Reason = Literal["correct", "wrong", "no_answer", "timeout", "error"]
COMPONENTS = ("correctness", "format", "length", "custom")


@dataclass(frozen=True)
class Check:
    """A checker's verdict before weighting: correctness is 1/0 for math, passed/total tests for code."""

    correctness: float
    reason: Reason
    extracted: str | None = None
    well_formed: bool = False


@dataclass(frozen=True)
class Score:
    """reward = sum(components.values()); each component is already weighted (see rewards.py). by_function: each
    reward function's own value (unweighted; None: no reward from it for this completion), by its name."""

    reward: float
    correct: bool
    extracted: str | None
    reason: Reason
    components: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COMPONENTS, 0.0))
    by_function: dict[str, float | None] = field(default_factory=dict)

    @classmethod
    def failed(cls, reason: Reason) -> "Score":
        """A check that timed out or crashed: reward 0, whatever the other components would have been."""
        return cls(reward=0.0, correct=False, extracted=None, reason=reason)
