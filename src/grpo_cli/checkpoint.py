"""Run checkpoints, written so that a crash mid-write never corrupts the last good one.

Layout under <run>/checkpoints/:
  step_000010/          the policy (a model directory, or a LoRA adapter directory), tokenizer,
                        and trainer_state.pt (step, optimizer, scheduler, RNG, health monitor history, best eval so far)
  last, best            one-line files naming the step directory; replaced atomically

A checkpoint is first written to `step_000010.tmp/` and renamed into place once complete; the pointer
files are rewritten with os.replace. Readers therefore only ever see complete checkpoints.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import torch

from grpo_cli.errors import GrpoError

STATE_FILE = "trainer_state.pt"


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def write_pointer(path: Path, target: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(target + "\n")
    os.replace(tmp, path)


def read_pointer(checkpoints: Path, name: str) -> Path | None:
    pointer = checkpoints / name
    if not pointer.exists():
        return None
    return checkpoints / pointer.read_text().strip()


def rng_state() -> dict:
    """Python's and torch's generators, and every CUDA device's when CUDA is available."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(checkpoints: Path, step: int, model, tokenizer, trainer_state: dict) -> Path:
    """Write the policy and trainer state for `step`, then point `last` at it."""
    checkpoints.mkdir(parents=True, exist_ok=True)
    final = checkpoints / step_dir_name(step)
    tmp = checkpoints / (final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save(trainer_state, tmp / STATE_FILE)
    if final.exists():  # a re-run of this step after a resume: the old copy is replaced whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_pointer(checkpoints / "last", final.name)
    return final


def load_trainer_state(checkpoint: Path) -> dict:
    try:
        return torch.load(checkpoint / STATE_FILE, weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:
        raise GrpoError(f"checkpoint {checkpoint} is unreadable ({exc}); delete it and resume from an earlier one") from None


def prune_checkpoints(checkpoints: Path, keep: set[str]) -> None:
    """Delete step directories not named in `keep` (the last and the best), and stale temporaries."""
    for path in checkpoints.glob("step_*"):
        if path.is_dir() and path.name not in keep:
            shutil.rmtree(path)
