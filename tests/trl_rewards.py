"""Reward functions written as TRL users write them for GRPOTrainer (imported by the verifier's workers by name).

format_reward and length_reward are the examples of TRL's GRPO documentation ("Using a custom reward
function": a format reward checked with a regular expression on conversational completions, and a length
reward on the completions' token ids); difficulty_bonus reads an extra dataset column and gives no reward
(None) where the column is empty; characters counts a plain-text completion's characters.
"""

import re


def format_reward(completions, **kwargs):
    """1.0 for a completion laid out as <think>...</think><answer>...</answer>, else 0.0."""
    pattern = r"^<think>.*?</think><answer>.*?</answer>$"
    contents = [completion[0]["content"] for completion in completions]
    return [1.0 if re.match(pattern, content) else 0.0 for content in contents]


def length_reward(completion_ids, **kwargs):
    """Longer completions (in tokens) score higher."""
    return [float(len(ids)) for ids in completion_ids]


def characters(completions, **kwargs):
    """Longer completions (in characters) score higher."""
    return [float(len(completion)) for completion in completions]


def difficulty_bonus(prompts, completions, difficulty, **kwargs):
    """The row's difficulty / 10; no reward from this function for a row without one."""
    return [None if level is None else level / 10 for level in difficulty]
