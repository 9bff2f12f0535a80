"""Checkpoints out of a run: `grpo export` (a plain model directory, LoRA merged) and `grpo merge`
(weight-space interpolation of two models).

A run keeps its checkpoints as `grpo_cli.training.checkpoint` writes them: `<run>/checkpoints/step_000010/` holds either
a full model (config.json, model.safetensors) or a peft LoRA adapter (adapter_config.json,
adapter_model.safetensors, whose `base_model_name_or_path` names the starting model), the tokenizer and
trainer_state.pt (ignored here); `<run>/checkpoints/best` and `last` are one-line files naming a step directory.

Merging: merged = weight * A + (1 - weight) * B for every tensor, computed in float32 and stored in A's
dtype, so weight 1.0 and 0.0 give back A and B bit for bit (for finite weights). It streams: tensors are read
one at a time from the inputs' safetensors files (memory-mapped) and appended one at a time to shards in A's
layout, so besides the page cache it holds a few tensors, never a whole model. A LoRA adapter input reads its
base's tensors and adds the adapter's scaling x B @ A to the weights it targets, as peft's merge_and_unload does.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import torch

from grpo_cli.errors import GrpoError
from grpo_cli.models import HUB_ID, adapter_base, convert_gguf, is_adapter, load_pretrained, load_tokenizer
from grpo_cli.monitoring.progress import Progress
from grpo_cli.training.checkpoint import read_pointer, step_dir_name

# The safetensors dtype names a model's weights use, and their torch types.
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


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
    """Write weight * A + (1 - weight) * B, tensor by tensor, as a plain model directory with A's config,
    tokenizer and shard layout. A and B are model directories or LoRA adapter directories (merged into their
    base first); they must share the architecture, tensor names and shapes. Sums are in float32, results in
    A's dtype. Only the tensor being merged is in memory, never a whole model or shard."""
    if not 0.0 <= weight <= 1.0:
        raise GrpoError(f"--weight {weight}: must be in [0, 1] (1 keeps A, 0 keeps B)")
    a_dir, b_dir, out_dir = Path(a_dir), Path(b_dir), Path(out_dir)
    _check_out_dir(out_dir, a_dir, b_dir)
    # Both checked before either is read: resolving a hub model may download it.
    _require_model_dir(a_dir)
    _require_model_dir(b_dir)
    a, b = StreamedWeights(a_dir), StreamedWeights(b_dir)
    what = f"cannot merge {a_dir} with {b_dir}"
    if a.architectures != b.architectures:
        raise GrpoError(f"{what}: different architectures, {_names(a.architectures)} and {_names(b.architectures)}")
    _check_same_tensors(a.shapes, b.shapes, what)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "generation_config.json", "model.safetensors.index.json"):
        if (a.model_dir / name).is_file():
            shutil.copyfile(a.model_dir / name, out_dir / name)
    with Progress("merge", len(a.shards)) as progress:
        for shard, names in a.shards.items():
            merged = (
                (weight * tensor_a.float() + (1.0 - weight) * b.tensor(name).float()).to(tensor_a.dtype)
                for name in names
                for tensor_a in [a.tensor(name)]
            )
            _write_safetensors(out_dir / shard, {name: (a.dtypes[name], a.shapes[name]) for name in names}, merged)
            progress.advance()
    _save_tokenizer(a_dir, out_dir)


def _write_safetensors(path: Path, layout: dict[str, tuple[str, list[int]]], tensors) -> None:
    """A safetensors file of the tensors named in `layout` ({name: (safetensors dtype, shape)}), in that
    order, written as `tensors` yields them: the header first, then each tensor's bytes, one at a time."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in layout.items():
        size = math.prod(shape) * SAFETENSORS_DTYPES[dtype].itemsize
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format aligns the data to 8 bytes, padding the header with spaces
    with path.open("wb") as f:
        f.write(len(encoded).to_bytes(8, "little") + encoded)
        for (name, (dtype, shape)), tensor in zip(layout.items(), tensors, strict=True):
            if tensor.dtype != SAFETENSORS_DTYPES[dtype] or list(tensor.shape) != shape:
                raise GrpoError(f"{path}: tensor {name} came out {tensor.dtype} {list(tensor.shape)}, not {dtype} {shape}")
            f.write(tensor.contiguous().view(-1).view(torch.uint8).numpy().data)


class StreamedWeights:
    """The tensors of a model directory, read one at a time from its memory-mapped safetensors files. For a
    LoRA adapter directory, its base's tensors, with scaling x B @ A (fp32) added to each weight the adapter
    targets, as peft's merge_and_unload does; the adapter's own tensors are small and read at once.

    Attributes: model_dir (the directory the tensors and config come from), architectures, shards (file
    name -> tensor names, in the directory's layout), shapes and dtypes (tensor name -> shape, and
    safetensors dtype name)."""

    def __init__(self, model_dir: Path):
        from safetensors import safe_open

        self.lora: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
        if is_adapter(model_dir):
            self.lora = _lora_factors(model_dir)
            model_dir = _local_model_dir(adapter_base(model_dir), f"the base model of {model_dir}")
        self.model_dir = model_dir
        self.architectures = json.loads((model_dir / "config.json").read_text()).get("architectures")
        index = model_dir / "model.safetensors.index.json"
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        else:
            files = sorted(path.name for path in model_dir.glob("*.safetensors"))
        if not files:
            raise GrpoError(
                f"{model_dir}: no *.safetensors weights; merging reads safetensors, so re-save the model with "
                "save_pretrained (safe_serialization=True)"
            )
        self._files = {shard: safe_open(str(model_dir / shard), framework="pt") for shard in files}
        self.shards = {shard: list(handle.keys()) for shard, handle in self._files.items()}
        self._where = {name: shard for shard, names in self.shards.items() for name in names}
        slices = {name: self._files[shard].get_slice(name) for name, shard in self._where.items()}
        self.shapes = {name: list(piece.get_shape()) for name, piece in slices.items()}
        self.dtypes = {name: piece.get_dtype() for name, piece in slices.items()}
        unknown = {dtype for dtype in self.dtypes.values() if dtype not in SAFETENSORS_DTYPES}
        if unknown:
            raise GrpoError(f"{model_dir}: tensors of dtype {', '.join(sorted(unknown))}, which merging does not support")
        missing = [name for name in self.lora if name not in self._where]
        if missing:
            raise GrpoError(f"{model_dir}: the adapter targets {missing[0]}, which its base model does not have")

    def tensor(self, name: str) -> torch.Tensor:
        tensor = self._files[self._where[name]].get_tensor(name)
        if name in self.lora:
            lora_a, lora_b, scaling = self.lora[name]
            tensor = (tensor + (lora_b @ lora_a) * scaling).to(tensor.dtype)
        return tensor


def _lora_factors(adapter_dir: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """{base weight name: (A, B, scaling)} of a plain LoRA adapter, A and B in float32 (peft's adapter dtype
    for fp32, bf16 and fp16 bases); scaling = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora."""
    from safetensors.torch import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    unsupported = [key for key in ("use_dora", "fan_in_fan_out", "lora_bias", "rank_pattern", "alpha_pattern",
                                   "modules_to_save") if config.get(key)]
    if config.get("peft_type", "LORA") != "LORA" or unsupported:
        raise GrpoError(
            f"{adapter_dir}: a {config.get('peft_type')} adapter with {', '.join(unsupported) or 'another method'}; "
            "merging supports plain LoRA adapters: merge this one into its base with peft's merge_and_unload first"
        )
    rank = config["r"]
    scaling = config["lora_alpha"] / (math.sqrt(rank) if config.get("use_rslora") else rank)
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(adapter_dir / "adapter_model.safetensors").items():
        module, _, part = key.removeprefix("base_model.model.").rpartition(".lora_")
        if part not in ("A.weight", "B.weight"):
            raise GrpoError(f"{adapter_dir}: adapter tensor {key} is not a LoRA A or B weight of a linear layer")
        factors.setdefault(f"{module}.weight", {})[part[0]] = tensor.float()
    return {name: (pair["A"], pair["B"], scaling) for name, pair in factors.items()}


def _local_model_dir(name_or_path: str, what: str) -> Path:
    """The directory holding a model: the path itself, or a hub id's snapshot (downloaded if not cached)."""
    path = Path(name_or_path)
    if path.is_dir() or not HUB_ID.fullmatch(name_or_path):
        if not (path / "config.json").is_file():
            raise GrpoError(f"cannot load {what} {name_or_path}: no config.json there")
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as exc:  # noqa: BLE001 - network, auth and missing-repo errors all end the same way
        raise GrpoError(f"cannot load {what} {name_or_path}: {str(exc).splitlines()[0]}") from None


def _names(architectures: list[str] | None) -> str:
    return "+".join(architectures or ["unknown"])


def _check_same_tensors(shapes_a: dict[str, list[int]], shapes_b: dict[str, list[int]], what: str) -> None:
    for name in shapes_a:
        if name not in shapes_b:
            raise GrpoError(f"{what}: tensor {name} is only in A")
        if shapes_a[name] != shapes_b[name]:
            raise GrpoError(f"{what}: tensor {name} has shape {shapes_a[name]} in A and {shapes_b[name]} in B")
    for name in shapes_b:
        if name not in shapes_a:
            raise GrpoError(f"{what}: tensor {name} is only in B")


def export_command(args: argparse.Namespace) -> None:
    if args.run_dir.endswith(".gguf"):
        out_dir = Path(args.out)
        if (out_dir / "config.json").is_file():
            raise GrpoError(f"--out {out_dir}: already holds a model; choose a new directory or remove it")
        convert_gguf(Path(args.run_dir), out_dir)
        print(f"converted {args.run_dir} -> {out_dir}")
        return
    step_dir = export_checkpoint(args.run_dir, args.checkpoint, args.out)
    print(f"exported {step_dir} -> {args.out}")


def merge_command(args: argparse.Namespace) -> None:
    merge_models(args.model_a, args.model_b, args.weight, args.out)
    print(f"merged {args.weight} x {args.model_a} + {1 - args.weight:g} x {args.model_b} -> {args.out}")
