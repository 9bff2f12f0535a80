"""Run checkpoints, written so that a crash mid-write never corrupts the last good one.

Layout under <run>/checkpoints/:
  step_000010/          the policy (a model directory, or a LoRA adapter directory), tokenizer,
                        trainer_state.pt (step, scheduler, RNG, health monitor history, best eval so far) and
                        optimizer/, the optimizer state by parameter name in torch.distributed.checkpoint's
                        format (one file per rank that wrote it; readable at any world size)
  last, best            one-line files naming the step directory; replaced atomically

A checkpoint is first written to `step_000010.tmp/` and renamed into place once complete; the pointer
files are rewritten with os.replace. Readers therefore only ever see complete checkpoints. Under torchrun
rank 0 writes the policy (gathered whole), the tokenizer, trainer_state.pt and the pointers, every rank its
shards of optimizer/ in parallel, and rank 0 renames the directory once all have finished.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import torch

from grpo_cli.errors import GrpoError
from grpo_cli.training import distributed

STATE_FILE = "trainer_state.pt"
SHARDED_DIR = "optimizer"


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


def save_checkpoint(checkpoints: Path, step: int, model, tokenizer, trainer_state: dict, sharded: dict) -> Path:
    """Write the policy, trainer state and `sharded` (the optimizer state) for `step`, then point `last` at
    it. Under torchrun every rank calls this together."""
    final = checkpoints / step_dir_name(step)
    tmp = checkpoints / (final.name + ".tmp")
    main = distributed.world().is_main
    if main:
        checkpoints.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(trainer_state, tmp / STATE_FILE)
    distributed.barrier()
    distributed.save_sharded(sharded, tmp / SHARDED_DIR)
    distributed.barrier()
    if main:
        if final.exists():  # a re-run of this step after a resume: the old copy is replaced whole
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_pointer(checkpoints / "last", final.name)
    distributed.barrier()
    return final


def load_sharded(checkpoint: Path, template: dict) -> dict:
    """`template` (this world size's optimizer state, e.g. {"optimizer": ...}) filled from the checkpoint's
    optimizer/, whatever world size wrote it."""
    if not (checkpoint / SHARDED_DIR).is_dir():
        raise GrpoError(f"checkpoint {checkpoint} has no {SHARDED_DIR}/ (written by an older grpo-cli?); resume from a newer one")
    return distributed.load_sharded(template, checkpoint / SHARDED_DIR)


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
