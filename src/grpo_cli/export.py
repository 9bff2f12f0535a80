"""Checkpoints out of a run: `grpo export` (a plain model directory, LoRA merged) and `grpo merge`
(weight-space interpolation of two models).

A run keeps its checkpoints as `grpo_cli.checkpoint` writes them: `<run>/checkpoints/step_000010/` holds either
a full model (config.json, model.safetensors) or a peft LoRA adapter (adapter_config.json,
adapter_model.safetensors, whose `base_model_name_or_path` names the starting model), the tokenizer and
trainer_state.pt (ignored here); `<run>/checkpoints/best` and `last` are one-line files naming a step directory.

Merging: merged = weight * A + (1 - weight) * B for every tensor, computed in float32 and stored in A's
dtype, so weight 1.0 and 0.0 give back A and B bit for bit (for finite weights).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from grpo_cli.checkpoint import read_pointer, step_dir_name
from grpo_cli.errors import GrpoError
from grpo_cli.models import HUB_ID, adapter_base, is_adapter, load_pretrained, load_tokenizer
from grpo_cli.progress import Progress


def resolve_checkpoint(run_dir: str | Path, checkpoint: str) -> Path:
    """The step directory that `checkpoint` ("best", "last" or a step number) names in `run_dir`."""
    checkpoints = Path(run_dir) / "checkpoints"
    if not checkpoints.is_dir():
        raise GrpoError(f"{run_dir}: not a run directory (no checkpoints/ folder); pass the train.output_dir of a run")
    if checkpoint in ("best", "last"):
        step_dir = read_pointer(checkpoints, checkpoint)
        if step_dir is None:
            raise GrpoError(
                f"{checkpoints / checkpoint}: missing, the run has no '{checkpoint}' checkpoint; {_available(checkpoints)}"
            )
    elif checkpoint.isdigit():
        step_dir = checkpoints / step_dir_name(int(checkpoint))
    else:
        raise GrpoError(f"--checkpoint {checkpoint!r}: expected best, last or a step number such as 50")
    if not step_dir.is_dir():
        raise GrpoError(f"{step_dir}: no such checkpoint; {_available(checkpoints)}")
    return step_dir


def _available(checkpoints: Path) -> str:
    steps = sorted(p.name for p in checkpoints.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    return f"available: {', '.join(steps)}" if steps else "the run saved no checkpoint yet"


def _require_model_dir(model_dir: Path) -> None:
    """A model directory, an adapter directory, or a hub id that `from_pretrained` may find in its cache."""
    hub_id = not model_dir.exists() and HUB_ID.fullmatch(str(model_dir))
    if not (hub_id or is_adapter(model_dir) or (model_dir / "config.json").is_file()):
        raise GrpoError(f"{model_dir}: not a model directory (no config.json) nor a LoRA adapter (no adapter_config.json)")


def _save_tokenizer(model_dir: Path, out_dir: Path) -> None:
    """Copy the tokenizer of `model_dir` (for an adapter without one, its base's) into `out_dir`."""
    source = str(model_dir)
    if is_adapter(model_dir) and not (model_dir / "tokenizer_config.json").is_file():
        source = adapter_base(model_dir)
    load_tokenizer(source).save_pretrained(out_dir)


def _check_out_dir(out_dir: Path, *inputs: Path) -> None:
    for path in inputs:
        if out_dir.resolve() == path.resolve():
            raise GrpoError(f"--out {out_dir}: is also an input; choose a new directory")


def export_checkpoint(run_dir: str | Path, checkpoint: str, out_dir: str | Path) -> Path:
    """Write checkpoint `checkpoint` ("best", "last" or a step number) of a run as a plain model directory
    (config.json, model.safetensors, tokenizer) that `from_pretrained` and vLLM load without grpo-cli.
    Returns the checkpoint directory it came from."""
    step_dir = resolve_checkpoint(run_dir, checkpoint)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, step_dir)
    with Progress("export", 2) as progress:  # loading (and merging LoRA), then writing: both take minutes at 7B
        model = load_pretrained(str(step_dir))
        progress.advance()
        model.save_pretrained(out_dir)
        _save_tokenizer(step_dir, out_dir)
        progress.advance()
    return step_dir


def merge_models(a_dir: str | Path, b_dir: str | Path, weight: float, out_dir: str | Path) -> None:
    """Write weight * A + (1 - weight) * B, tensor by tensor, as a plain model directory with A's config and
    tokenizer. A and B are model directories or LoRA adapter directories (merged into their base first);
    they must share the architecture, tensor names and shapes. Sums are in float32, results in A's dtype."""
    if not 0.0 <= weight <= 1.0:
        raise GrpoError(f"--weight {weight}: must be in [0, 1] (1 keeps A, 0 keeps B)")
    a_dir, b_dir, out_dir = Path(a_dir), Path(b_dir), Path(out_dir)
    _check_out_dir(out_dir, a_dir, b_dir)
    # Both checked before either loads: loading a 7B model takes minutes.
    _require_model_dir(a_dir)
    _require_model_dir(b_dir)
    model_a, model_b = load_pretrained(str(a_dir)), load_pretrained(str(b_dir))
    what = f"cannot merge {a_dir} with {b_dir}"
    if model_a.config.architectures != model_b.config.architectures:
        raise GrpoError(f"{what}: different architectures, {_names(model_a)} and {_names(model_b)}")
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    _check_same_tensors(state_a, state_b, what)
    # A new dict rather than in-place updates: tied tensors (embeddings and lm_head) share storage in state_a.
    merged = {}
    with Progress("merge", len(state_a)) as progress:
        for name, a in state_a.items():
            merged[name] = (weight * a.float() + (1.0 - weight) * state_b[name].float()).to(a.dtype)
            progress.advance()
    model_a.load_state_dict(merged)
    model_a.save_pretrained(out_dir)
    _save_tokenizer(a_dir, out_dir)


def _names(model) -> str:
    return "+".join(model.config.architectures or ["unknown"])


def _check_same_tensors(state_a: dict, state_b: dict, what: str) -> None:
    for name in state_a:
        if name not in state_b:
            raise GrpoError(f"{what}: tensor {name} is only in A")
        if state_a[name].shape != state_b[name].shape:
            shape_a, shape_b = list(state_a[name].shape), list(state_b[name].shape)
            raise GrpoError(f"{what}: tensor {name} has shape {shape_a} in A and {shape_b} in B")
    for name in state_b:
        if name not in state_a:
            raise GrpoError(f"{what}: tensor {name} is only in B")


def export_command(args: argparse.Namespace) -> None:
    step_dir = export_checkpoint(args.run_dir, args.checkpoint, args.out)
    print(f"exported {step_dir} -> {args.out}")


def merge_command(args: argparse.Namespace) -> None:
    merge_models(args.model_a, args.model_b, args.weight, args.out)
    print(f"merged {args.weight} x {args.model_a} + {1 - args.weight:g} x {args.model_b} -> {args.out}")
