"""Models: the one place that loads weights, and the tiny Llama that the CPU demo trains.

Every command loads through here:
- `load_pretrained(path)`: a model directory (or a hub id where a hub is reachable), or a LoRA adapter
  directory (a run checkpoint), which is applied to the base model it names and merged;
- `load_model(model_cfg)`: the same for model.name_or_path, on model.device in model.dtype ("auto" is
  bfloat16 on CUDA and float32 on CPU, where bf16 matmuls are slow and lossy);
- `load_checkpoint_weights(model, directory)`: a checkpoint's trained weights (all of them, or the adapter's)
  into a model already built, as resume does; `checkpoint_weights(model)` the other way, a live (peft) model's
  weights under a plain model's names, LoRA merged.
Each checks the weights' names against the model's: a missing or unexpected tensor is a one-line error, never a
silently random layer.

A GGUF file (llama.cpp's format, how many instruct checkpoints ship) is a model source too:
`model_source(path)` converts it on first use (`gguf_checkpoint`) into a plain checkpoint folder, cached by the
file's content hash, so every command sees an ordinary model directory.

`grpo init-model` builds a model that nothing has to download: a byte-level BPE tokenizer trained with
`tokenizers` on the task's text, digits split one per token (so the model sees 47 as 4, 7, the way it has to
add them), and a randomly initialised LlamaForCausalLM of shape model.tiny. Both are saved as a normal model
directory (config.json, model.safetensors, generation_config.json, tokenizer.json) that transformers and vLLM
load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Iterator

import peft
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from grpo_cli.config import Config, ModelConfig, TinyModelConfig
from grpo_cli.errors import GrpoError

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
# "org/name": tried on the hub when no such local directory exists.
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def resolve_device(name: str) -> torch.device:
    """model.device: "auto" is CUDA when present, else CPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise GrpoError("model.device=cuda but no CUDA device is visible; use model.device=auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """model.dtype: "auto" is bfloat16 on CUDA, float32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def compute_autocast(device: torch.device, dtype: torch.dtype) -> torch.autocast:
    """Autocast to `dtype` (model.dtype) when it is below float32: float32 master weights, low-precision math."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def _source(path: str) -> str:
    """What to hand `from_pretrained`: an existing local directory, or a hub id; anything else is an error."""
    if not path:
        raise GrpoError("model.name_or_path is not set; point it at a model directory (grpo init-model builds a tiny one)")
    local = Path(model_source(path)).expanduser()
    if local.exists():
        # Absolute, because LoRA checkpoints record it as their base: export must find it from anywhere.
        return str(local.resolve())
    if HUB_ID.fullmatch(path):
        return path
    raise GrpoError(f"model directory {path} does not exist; build it (grpo init-model, grpo sft) or fix model.name_or_path")


def model_source(path: str) -> str:
    """model.name_or_path as the commands use it: a `.gguf` file becomes its converted checkpoint folder
    (`gguf_checkpoint`); anything else is returned as it is."""
    return str(gguf_checkpoint(Path(path).expanduser())) if path.endswith(".gguf") else path


def gguf_cache_dir() -> Path:
    """Where converted GGUF checkpoints are kept: $GRPO_CACHE_DIR/gguf, else ~/.cache/grpo-cli/gguf."""
    root = os.environ.get("GRPO_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "grpo-cli"
    return Path(root) / "gguf"


def gguf_checkpoint(gguf_file: Path) -> Path:
    """The plain checkpoint folder converted from `gguf_file`, converting it on first use. The folder is named
    by the file's content hash, so a changed file is converted again and a renamed one is not."""
    if not gguf_file.is_file():
        raise GrpoError(f"model.name_or_path={gguf_file}: no such GGUF file; fix the path")
    digest = hashlib.sha256()
    with gguf_file.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    key = digest.hexdigest()[:16]
    # Found by the hash alone: the same file under another name is the same checkpoint.
    converted = [path for path in gguf_cache_dir().glob(f"*-{key}") if (path / "config.json").is_file()]
    if converted:
        return converted[0]
    out_dir = gguf_cache_dir() / f"{gguf_file.stem}-{key}"
    convert_gguf(gguf_file, out_dir)
    return out_dir


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """Write `gguf_file` as a plain checkpoint folder `out_dir` (config.json, model.safetensors, tokenizer with
    its chat template, generation_config.json) that transformers and vLLM load like any other.

    transformers dequantizes GGUF weights to float32 as it reads them; they are stored as float32 (exactly what the
    dequantizer produced, so nothing is lost) and load in model.dtype like any checkpoint. A GGUF-loaded model
    keeps a `quantization_config` that `save_pretrained` refuses, so the weights are copied into a model built
    from the config without it. Written to a temporary folder and renamed, so an interrupted conversion (or two
    ranks converting at once) never leaves a half-written checkpoint where the next run looks."""
    from gguf import GGUFReader

    try:
        GGUFReader(gguf_file)  # reads the header and tensor table: a corrupt or truncated file fails here, at once
    except Exception as exc:  # noqa: BLE001 - gguf raises many types for a damaged file
        raise GrpoError(
            f"{gguf_file} is not a readable GGUF file (corrupt or truncated: {_first_line(exc)}); download it again, "
            "or point model.name_or_path at a model directory"
        ) from None
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a file it cannot convert
        raise GrpoError(
            f"cannot convert the GGUF file {gguf_file}: {_first_line(exc)} (transformers reads llama, qwen2, mistral "
            "and a few other architectures); use a model directory instead"
        ) from None
    # GGUF stores no tokenizer length limit (transformers leaves a 1e30 sentinel): the context is the limit.
    tokenizer.model_max_length = loaded.config.max_position_embeddings
    config = loaded.config
    del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.with_name(f"{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(out_dir)
    except OSError:  # another process finished the same conversion first
        shutil.rmtree(partial, ignore_errors=True)
        if not (out_dir / "config.json").is_file():
            raise


def _first_line(exc: Exception) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def _load_error(path: str, exc: Exception) -> GrpoError:
    return GrpoError(f"cannot load a model from {path}: {_first_line(exc)}")


def load_tokenizer(path: str):
    source = _source(path)
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:
        raise _load_error(path, exc) from None


def is_adapter(model_dir: str | Path) -> bool:
    """Whether `model_dir` holds a peft LoRA adapter (a run checkpoint with LoRA) rather than a whole model."""
    return (Path(model_dir) / "adapter_config.json").is_file()


def adapter_base(adapter_dir: str | Path) -> str:
    """The starting model a LoRA adapter directory was trained from (its `base_model_name_or_path`)."""
    return json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["base_model_name_or_path"]


def load_pretrained(path: str, dtype: torch.dtype | str = "auto") -> PreTrainedModel:
    """The model at `path` on CPU, in `dtype` ("auto": as stored). A LoRA adapter directory is applied to the
    base model named in its adapter_config.json and merged, so the result is always a plain model."""
    source = _source(path)
    if not is_adapter(source):
        try:
            return AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise _load_error(path, exc) from None
    import peft

    base = adapter_base(source)
    try:
        base_model = load_pretrained(base, dtype)
    except GrpoError as exc:
        where = Path(source) / "adapter_config.json"
        raise GrpoError(f"cannot load the base model (base_model_name_or_path in {where}) {base}: {exc}") from None
    model = peft.get_peft_model(base_model, peft.PeftConfig.from_pretrained(source))
    load_checkpoint_weights(model, Path(source))
    return model.merge_and_unload()


def load_model(model_cfg: ModelConfig) -> PreTrainedModel:
    """model.name_or_path on model.device in model.dtype, with gradient checkpointing when asked for."""
    device = resolve_device(model_cfg.device)
    model = load_pretrained(model_cfg.name_or_path, resolve_dtype(model_cfg.dtype, device))
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model.to(device)


def load_checkpoint_weights(model: torch.nn.Module, directory: Path) -> None:
    """Load the weights that `model.save_pretrained(directory)` wrote back into `model`: the adapter's only for a
    peft model, else every tensor. Raises GrpoError when a tensor is missing (other than one tied to a loaded
    tensor, such as lm_head to the embeddings) or unexpected, or when the directory holds no weights."""
    from safetensors.torch import load_file

    adapter = isinstance(model, peft.PeftModel)
    files = [directory / "adapter_model.safetensors"] if adapter else sorted(directory.glob("model*.safetensors"))
    files = [path for path in files if path.is_file()]
    if not files:
        kind = "LoRA adapter (adapter_model.safetensors)" if adapter else "model weights (model*.safetensors)"
        raise GrpoError(f"{directory} holds no {kind}; point at a complete checkpoint, or an earlier one")
    state = {}
    for path in files:
        state.update(load_file(path))
    if adapter:
        expected = set(peft.get_peft_model_state_dict(model))
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if not missing and not unexpected:
            peft.set_peft_model_state_dict(model, state)
    else:
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = _untied(model, missing)
    if missing or unexpected:
        raise GrpoError(
            f"the weights in {directory} do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]}): "
            "load them with the model and model.lora settings they were trained with"
        )


def checkpoint_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """`model`'s weights under the names of its checkpoint, as vLLM's loader expects them.

    For a peft LoRA model, each adapted layer's base weight merged with its active adapters,
        W' = W + sum_a (alpha_a / r_a) B_a A_a
    under the base model's name (peft's `base_model.model.` prefix and `.base_layer` dropped); the adapter
    matrices themselves are not sent. The merge happens one layer at a time as the caller (vLLM's weight sync,
    the async sampler's weight push in pipeline.py) consumes the iterator, so at most one merged matrix is alive
    at once.
    """
    if not isinstance(model, peft.PeftModel):
        yield from model.state_dict().items()
        return
    lora_layers = {name: module for name, module in model.named_modules() if isinstance(module, peft.tuners.lora.LoraLayer)}
    for name, tensor in model.state_dict().items():
        if ".lora_" in name:
            continue
        layer = lora_layers.get(name.removesuffix(".base_layer.weight"))
        if layer is not None and not layer.merged:  # a merged layer's base weight already holds its adapter
            tensor = tensor + sum(layer.get_delta_weight(adapter) for adapter in layer.active_adapters)
        yield name.removeprefix("base_model.model.").replace(".base_layer.", "."), tensor


def _untied(model: torch.nn.Module, missing: list[str]) -> list[str]:
    """The names in `missing` whose tensor is not shared with a tensor that was loaded."""
    tensors = model.state_dict(keep_vars=True)
    loaded = {id(tensor) for name, tensor in tensors.items() if name not in missing}
    return [name for name in missing if id(tensors[name]) not in loaded]


# The tiny model stands in for an instruct model, so recipes with data.use_chat_template=true run on it:
# BOS (a chat template writes its own special tokens, see encode_prompt), then each message on its own line.
PLAIN_CHAT_TEMPLATE = "{{ bos_token }}{% for message in messages %}{{ message['content'] }}\n{% endfor %}"


def build_tokenizer(texts: Iterable[str], vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts`, one token per digit, BOS prepended to every encoded text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes, seen in training or not
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tokenizer.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=max_length,
        chat_template=PLAIN_CHAT_TEMPLATE,
    )


def build_tiny_model(tiny: TinyModelConfig, tokenizer, seed: int) -> LlamaForCausalLM:
    """A randomly initialised Llama of shape `tiny`, its vocabulary the tokenizer's."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=tiny.hidden_size,
        intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_heads,
        max_position_embeddings=tiny.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    return model


def init_dir(config: Config) -> str:
    """Where `grpo init-model` writes and `grpo sft` starts from: sft.init_from, else model.name_or_path."""
    return config.sft.init_from or config.model.name_or_path


def init_model_command(args: argparse.Namespace, config: Config) -> None:
    """`grpo init-model`: tokenizer trained on the train split's questions and solutions, tiny Llama, saved."""
    from grpo_cli.data.loaders import load_examples
    from grpo_cli.data.prompts import question_text

    out = init_dir(config)
    if not out:
        raise GrpoError("set sft.init_from=DIR (or model.name_or_path=DIR): where to write the tiny model")
    texts = (f"{question_text(ex)}\n{ex.solution}" for ex in load_examples(config, "train"))
    tiny = config.model.tiny
    tokenizer = build_tokenizer(texts, tiny.vocab_size, tiny.max_position_embeddings)
    model = build_tiny_model(tiny, tokenizer, config.train.seed)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    num_params = sum(p.numel() for p in model.parameters())
    print(
        f"wrote a tiny Llama to {out}: {num_params / 1e6:.2f}M parameters, {tiny.num_layers} layers, "
        f"hidden {tiny.hidden_size}, head_dim {tiny.hidden_size // tiny.num_heads}, vocabulary {len(tokenizer)}"
    )
