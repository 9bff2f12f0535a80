"""Datasets: generated Harbor problems, JSONL files and GSM8K, as lists of Example."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Example:
    id: str
    question: str  # the raw problem text; format_prompt() turns it into model input
    answer: str  # the reference the verifier compares against
    solution: str = ""  # a worked solution for SFT (ends in the answer line), empty when the dataset has none
    level: int = 0  # the Harbor difficulty level (data.difficulty_steps); 0 for other datasets
