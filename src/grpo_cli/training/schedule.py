"""Which prompts each training step sees: an epoch-by-epoch seeded order (fractional epochs allowed), prompts
set aside (data.skip_solved / skip_unsolved) or of a Harbor level not reached yet (data.difficulty_steps)
replaced, and dynamic sampling's extra rounds. Every choice is a function of the seed and the step, so a resumed
run, the one-step-ahead sampler process (pipeline.py) and `grpo preflight` draw the same prompts as the loop."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Collection


@dataclass
class PromptSchedule:
    """Which prompts each step sees: a fresh seeded permutation per epoch, fractional epochs allowed.

    The position is a function of the step alone, so a resumed run sees exactly the prompts it would have.
    """

    num_prompts: int
    prompts_per_step: int
    epochs: float
    seed: int

    @property
    def total_steps(self) -> int:
        return max(1, math.ceil(self.epochs * self.num_prompts / self.prompts_per_step))

    def epoch_at(self, step: int) -> float:
        return step * self.prompts_per_step / self.num_prompts

    def indices(self, step: int, set_aside: Collection[int] = ()) -> list[int]:
        """The prompts of `step`; those in `set_aside` (data.skip_solved/skip_unsolved) are replaced by prompts
        drawn at random, seeded by the step, from the rest (kept when too few are left)."""
        start = step * self.prompts_per_step
        positions = [divmod(position, self.num_prompts) for position in range(start, start + self.prompts_per_step)]
        # Shuffle each epoch the step draws from once, not once per prompt (a step can cross an epoch boundary).
        permutations = {epoch: self._permutation(epoch) for epoch in {epoch for epoch, _ in positions}}
        drawn = [permutations[epoch][offset] for epoch, offset in positions]
        if not set_aside:
            return drawn
        kept = [i for i in drawn if i not in set_aside]
        pool = [i for i in range(self.num_prompts) if i not in set_aside and i not in kept]
        replacements = random.Random(f"{self.seed}:{step}:set_aside").sample(pool, min(len(drawn) - len(kept), len(pool)))
        shortfall = len(drawn) - len(kept) - len(replacements)
        return kept + replacements + [i for i in drawn if i in set_aside][:shortfall]

    def resample_indices(self, step: int, resample_round: int) -> list[int]:
        """The prompts of dynamic sampling's extra round `resample_round` (>= 1) at `step`: prompts_per_step
        drawn at random, seeded by step and round, so a resumed run draws the same ones."""
        rng = random.Random(f"{self.seed}:{step}:{resample_round}")
        return rng.sample(range(self.num_prompts), min(self.prompts_per_step, self.num_prompts))

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(self.num_prompts))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order


def step_prompts(schedule, examples, data, step: int, state: dict) -> tuple[list[int], set[int]]:
    """The train prompts of `step` (1-based): the schedule's, those set aside (state["set_aside"]) or of a level
    not yet reached replaced; and the prompts set aside now."""
    epoch = schedule.epoch_at(step - 1)
    set_aside = {i for i, until in state.setdefault("set_aside", {}).items() if until > epoch}
    return schedule.indices(step - 1, set_aside | locked_prompts(examples, data, step)), set_aside


def resampler(schedule, examples, step: int) -> Callable[[int], list]:
    """Dynamic sampling's extra round r of `step` -> its examples (PromptSchedule.resample_indices)."""
    return lambda resample_round: [examples[i] for i in schedule.resample_indices(step - 1, resample_round)]


def locked_prompts(examples, data, step: int) -> set[int]:
    """The train prompts whose Harbor level data.difficulty_steps has not reached at `step` (1-based)."""
    locked_levels = {level for level, start in zip(data.difficulty, data.difficulty_steps) if start > step}
    if not locked_levels:
        return set()
    return {i for i, example in enumerate(examples) if example.level in locked_levels}


def set_aside_after(data, indices, groups, epoch, active, set_aside) -> dict[int, float]:
    """The prompts set aside after a step, prompt index -> the epoch it returns at: those still out at `epoch`
    (`active`), and the step's prompts whose group was all correct (for data.skip_solved epochs) or all wrong
    (data.skip_unsolved). `groups` are grpo_step's, the step's prompts (`indices`) first."""
    kept = {i: until for i, until in set_aside.items() if i in active}
    for index, group in zip(indices, groups):
        correct = [reason == "correct" for reason in group["reasons"]]
        if data.skip_solved and all(correct):
            kept[index] = epoch + data.skip_solved
        elif data.skip_unsolved and not any(correct):
            kept[index] = epoch + data.skip_unsolved
    return kept
