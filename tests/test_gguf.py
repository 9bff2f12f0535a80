"""GGUF files as a model source (models.gguf_checkpoint): SmolLM2-135M-Instruct's Q4_1 file from its registry
package, converted into a plain float32 checkpoint folder cached by content hash.

The damaged-file errors run in `make test` (each fails before any weight is read); the conversions (~25 s each)
are in the real-model tier (slow)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import pytest
import torch
from safetensors import safe_open

from conftest import GRPO
from grpo_cli import models
from grpo_cli.cli import main

TEXT = "<|im_start|>user\nA crate holds 24 jars. How many jars do 15 crates hold?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPO_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "gguf"


def cli_error(argv: list[str], capsys) -> str:
    """What `grpo ARGV` prints on stderr when it fails with exit status 1 (in this process)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    return capsys.readouterr().err


def damaged_files(real_gguf, directory):
    """Files named .gguf that are not intact GGUF files, each with what gguf's own error says (if it is clear)."""
    data = real_gguf.read_bytes()
    files = {
        "text.gguf": (b"not a model\n", "GGUF magic invalid"),
        "bad-version.gguf": (data[:4] + b"\xff" * 4 + data[8:4096], "version"),
        "cut-in-header.gguf": (data[:1000], ""),
        "cut-in-weights.gguf": (data[: len(data) // 2], ""),
    }
    for name, (content, _) in files.items():
        (directory / name).write_bytes(content)
    return {directory / name: expected for name, (_, expected) in files.items()}


def test_a_damaged_gguf_file_is_a_one_line_error(real_gguf, tmp_path, cache_dir, capsys):
    for path, expected in damaged_files(real_gguf, tmp_path).items():
        err = cli_error(["export", str(path), "--out", str(tmp_path / "out")], capsys)
        assert err.startswith(f"error: {path} is not a readable GGUF file") and expected in err, err
        assert err.count("\n") == 1, err
        # As a model source, through any command: the same error, and nothing half-written in the cache.
        err = cli_error(["plan", f"model.name_or_path={path}"], capsys)
        assert err.startswith(f"error: {path} is not a readable GGUF file") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
    assert not cache_dir.exists() or not any(cache_dir.iterdir())


def test_a_missing_gguf_file_names_the_path(tmp_path, cache_dir, capsys):
    err = cli_error(["plan", f"model.name_or_path={tmp_path / 'nowhere.gguf'}"], capsys)
    assert err == f"error: model.name_or_path={tmp_path / 'nowhere.gguf'}: no such GGUF file; fix the path\n"


def test_the_command_line_exits_1_with_one_line(tmp_path):
    (tmp_path / "notes.gguf").write_text("not a model\n")
    result = subprocess.run([GRPO, "export", str(tmp_path / "notes.gguf"), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {tmp_path / 'notes.gguf'} is not a readable GGUF file")
    assert result.stderr.count("\n") == 1, result.stderr


# The real-model tier: conversions of the real file.


@pytest.fixture(scope="module")
def converted(real_gguf, tmp_path_factory):
    """The file converted through the command line (`grpo plan` on it), in a fresh cache: (cache, folder)."""
    cache = tmp_path_factory.mktemp("grpo-cache")
    result = subprocess.run([GRPO, "plan", f"model.name_or_path={real_gguf}"], capture_output=True, text=True,
                            env=os.environ | {"GRPO_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = (cache / "gguf").iterdir()
    # The command planned for the converted folder's config: 134.52M parameters, as in the real model's card.
    assert f"{folder}/config.json" in result.stdout and "134.52M parameters" in result.stdout
    return cache, folder


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tensors(folder) -> dict[str, torch.Tensor]:
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}


@pytest.mark.slow
@pytest.mark.real_model
def test_the_conversion_is_a_plain_float32_checkpoint_with_tied_weights(converted, real_gguf):
    _, folder = converted
    assert folder.name == f"SmolLM2-135M-Instruct.Q4_1-{sha256(real_gguf)[:16]}"
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["dtype"], config["tie_word_embeddings"], config["vocab_size"]) == ("float32", True, 49152)
    weights = tensors(folder)
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}
    assert "lm_head.weight" not in weights  # tied: stored once, as the embeddings
    assert len(weights) == 2 + 30 * 9  # embeddings, final norm, 9 tensors per decoder layer
    model = models.load_pretrained(str(folder))
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


@pytest.mark.slow
@pytest.mark.real_model
def test_the_tokenizer_and_chat_template_are_the_files(converted, real_gguf):
    from gguf import GGUFReader

    _, folder = converted
    fields = GGUFReader(real_gguf).fields

    def value(key):
        return fields[key].contents()

    tokenizer = models.load_tokenizer(str(folder))
    assert tokenizer.chat_template == value("tokenizer.chat_template")
    assert tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))) == value("tokenizer.ggml.tokens")
    special = (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id, tokenizer.pad_token_id)
    assert special == tuple(value(f"tokenizer.ggml.{name}_token_id") for name in ("bos", "eos", "unknown", "padding"))
    assert tokenizer.model_max_length == value("llama.context_length") == 8192
    # Special tokens are single tokens, and text splits as the file's own tokenizer splits it.
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.eos_token_id) == 1
    assert tokenizer.decode(ids) == TEXT
    from transformers import AutoTokenizer

    own = AutoTokenizer.from_pretrained(str(real_gguf.parent), gguf_file=real_gguf.name)
    assert own(TEXT, add_special_tokens=False)["input_ids"] == ids


@pytest.mark.slow
@pytest.mark.real_model
def test_the_same_logits_as_transformers_own_gguf_load(converted, real_gguf):
    from transformers import AutoModelForCausalLM

    _, folder = converted
    own = AutoModelForCausalLM.from_pretrained(str(real_gguf.parent), gguf_file=real_gguf.name, dtype=torch.float32)
    ours = models.load_pretrained(str(folder))
    ids = torch.tensor([models.load_tokenizer(str(folder))(TEXT, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, own(ids).logits)


@pytest.mark.slow
@pytest.mark.real_model
def test_cached_by_content_a_copy_is_not_converted_again_a_changed_file_is(converted, real_gguf, tmp_path, monkeypatch):
    from gguf import GGUFReader

    cache, folder = converted
    monkeypatch.setenv("GRPO_CACHE_DIR", str(cache))
    written = (folder / "model.safetensors").stat().st_mtime_ns

    def no_conversion(*args):
        raise AssertionError("converted again")

    with monkeypatch.context() as patch:
        patch.setattr(models, "convert_gguf", no_conversion)
        assert models.gguf_checkpoint(real_gguf) == folder
        # The same bytes under another name are the same checkpoint.
        renamed = tmp_path / "smollm2.gguf"
        shutil.copyfile(real_gguf, renamed)
        assert models.model_source(str(renamed)) == str(folder)
    assert (folder / "model.safetensors").stat().st_mtime_ns == written

    # One byte of layer 0's query weights changed: a Q4_1 block's first byte holds two of its 4-bit weights.
    changed = tmp_path / "changed.gguf"
    data = bytearray(real_gguf.read_bytes())
    (query,) = [t for t in GGUFReader(real_gguf).tensors if t.name == "blk.0.attn_q.weight"]
    data[query.data_offset + 4] ^= 0xFF  # after the block's float16 scale and minimum
    changed.write_bytes(data)
    new_folder = models.gguf_checkpoint(changed)
    assert new_folder != folder and new_folder.name.endswith(hashlib.sha256(data).hexdigest()[:16])
    before, after = tensors(folder), tensors(new_folder)
    differ = {name: int((before[name] != after[name]).sum()) for name in before if not torch.equal(before[name], after[name])}
    assert differ == {"model.layers.0.self_attn.q_proj.weight": 2}
