"""`grpo export`: a run's LoRA checkpoint becomes a plain model directory that transformers loads alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from tiny_checkpoints import save_lora_checkpoint, save_tiny_llama, token_logprobs
from transformers import AutoModelForCausalLM

from grpo_cli.cli import main
from grpo_cli.errors import GrpoError
from grpo_cli.export import export_checkpoint, resolve_checkpoint

TOKENS = [3, 17, 42, 8, 60, 1, 25, 90, 33, 12]


def point(run_dir, pointer: str, step_dir: str) -> None:
    """What the trainer writes: checkpoints/best and checkpoints/last are one-line files naming a step directory."""
    (run_dir / "checkpoints" / pointer).write_text(step_dir + "\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory by hand: base model, LoRA checkpoints at steps 2 and 3 (best = 2, last = 3)."""
    root = tmp_path_factory.mktemp("export")
    base = save_tiny_llama(root / "base", seed=0)
    run_dir = root / "run"
    policies = {}
    for step in (2, 3):
        policies[step] = save_lora_checkpoint(run_dir / "checkpoints" / f"step_00000{step}", root / "base", seed=step)
    (run_dir / "checkpoints" / "step_000004.tmp").mkdir()  # a checkpoint cut off mid-write
    point(run_dir, "best", "step_000002")
    point(run_dir, "last", "step_000003")
    return {"root": root, "run_dir": run_dir, "base": base, "policies": policies}


def test_best_last_and_step_numbers_resolve_to_step_directories(run):
    assert resolve_checkpoint(run["run_dir"], "best").name == "step_000002"
    assert resolve_checkpoint(run["run_dir"], "last").name == "step_000003"
    assert resolve_checkpoint(run["run_dir"], "3").name == "step_000003"


@pytest.mark.parametrize(
    "checkpoint, message",
    [("7", "step_000007: no such checkpoint; available: step_000002, step_000003"),
     ("latest", "expected best, last or a step number")],
)
def test_unknown_checkpoint_names_what_exists(run, checkpoint, message):
    with pytest.raises(GrpoError, match=message):
        resolve_checkpoint(run["run_dir"], checkpoint)


def test_missing_pointer_and_non_run_directory(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(GrpoError, match="no 'best' checkpoint; the run saved no checkpoint yet"):
        resolve_checkpoint(tmp_path, "best")
    with pytest.raises(GrpoError, match="not a run directory"):
        resolve_checkpoint(tmp_path / "checkpoints", "best")


def test_export_loads_without_grpo_cli_and_matches_the_trained_policy(run, capsys):
    out = run["root"] / "exported_last"
    main(["export", str(run["run_dir"]), "--checkpoint", "last", "--out", str(out)])
    assert "step_000003" in capsys.readouterr().out

    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not files & {"adapter_config.json", "adapter_model.safetensors", "trainer_state.pt"}

    script = (
        "import json, sys, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"model = AutoModelForCausalLM.from_pretrained({str(out)!r}, dtype=torch.float32).eval()\n"
        f"AutoTokenizer.from_pretrained({str(out)!r})\n"
        f"ids = torch.tensor([{TOKENS}])\n"
        "with torch.no_grad():\n"
        "    logits = model(input_ids=ids).logits.float()\n"
        "logprobs = torch.log_softmax(logits[0, :-1], -1).gather(-1, ids[0, 1:, None])[:, 0]\n"
        "assert not any(name.startswith('grpo_cli') for name in sys.modules)\n"
        "print(json.dumps(logprobs.tolist()))\n"
    )
    # -I keeps the working directory and PYTHONPATH off sys.path; the script asserts grpo_cli never loaded.
    result = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    exported = torch.tensor(json.loads(result.stdout.strip().splitlines()[-1]))

    policy = token_logprobs(run["policies"][3], TOKENS)
    with run["policies"][3].disable_adapter():
        base = token_logprobs(run["policies"][3], TOKENS)
    assert (policy - base).abs().max() > 1e-2  # the adapter matters, so agreement below is not vacuous
    torch.testing.assert_close(exported, policy, rtol=0, atol=1e-5)


def test_export_best_writes_that_step(run):
    out = run["root"] / "exported_best"
    assert export_checkpoint(run["run_dir"], "best", out).name == "step_000002"
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    torch.testing.assert_close(token_logprobs(model, TOKENS), token_logprobs(run["policies"][2], TOKENS), rtol=0, atol=1e-5)


def test_export_of_a_full_model_checkpoint_copies_its_weights(tmp_path):
    model = save_tiny_llama(tmp_path / "run" / "checkpoints" / "step_000005", seed=5)
    point(tmp_path / "run", "last", "step_000005")
    export_checkpoint(tmp_path / "run", "last", tmp_path / "out")
    exported = load_file(tmp_path / "out" / "model.safetensors")
    for name, tensor in model.state_dict().items():
        assert torch.equal(exported[name], tensor), name


def test_export_error_is_one_line_on_the_cli(run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(run["run_dir"]), "--checkpoint", "9", "--out", str(run["root"] / "nowhere")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "step_000009" in err


def test_adapter_whose_base_is_gone(run, tmp_path):
    step_dir = tmp_path / "run" / "checkpoints" / "step_000001"
    shutil.copytree(run["run_dir"] / "checkpoints" / "step_000002", step_dir)
    config = json.loads((step_dir / "adapter_config.json").read_text())
    (step_dir / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": str(tmp_path / "gone")}))
    with pytest.raises(GrpoError, match=f"cannot load the base model \\(base_model_name_or_path in {step_dir}/adapter_config.json\\) {tmp_path}/gone: "):
        export_checkpoint(tmp_path / "run", "1", tmp_path / "out")
