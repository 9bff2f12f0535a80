"""Datasets: generated Harbor problems, and files or Hub datasets read by the datasets library (GSM8K among
them), as lists of Example."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Example:
    id: str
    # The raw problem: text, or chat messages [{"role", "content"}, ...]; format_prompt() makes the model input.
    question: str | list[dict]
    answer: str  # the reference the verifier compares against
    solution: str = ""  # a worked solution for SFT (ends in the answer line), empty when the dataset has none
    level: int = 0  # the Harbor difficulty level (data.difficulty_steps); 0 for other datasets
    # Every column of the row but the prompt's, as read: reward functions get them by name (verifier/rewards.py).
    columns: dict = field(default_factory=dict)

    @property
    def conversational(self) -> bool:
        return isinstance(self.question, list)
