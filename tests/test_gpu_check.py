"""`make gpu-check` on a machine without a GPU: its plan (every step, the time window, commands that parse and
configurations that validate) and its checks on runs written by hand, so the script cannot rot before the next
GPU run."""

import argparse
import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from conftest import REPO
from grpo_cli.cli import build_parser
from grpo_cli.compose import compose

sys.path.insert(0, str(REPO / "scripts"))
import gpu_check  # noqa: E402

STEPS = ["prepare", "bench", "full", "lora", "async", "fsdp", "batch", "export"]
MACHINES = {
    "1 GPU, vLLM, model to convert": gpu_check.Machine(gpus=1, vllm=True, gguf=Path("/pkg/m.gguf"), converted=False),
    "2 GPUs, vLLM, converted": gpu_check.Machine(gpus=2, vllm=True, gguf=None, converted=True),
    "1 GPU, no vLLM": gpu_check.Machine(gpus=1, vllm=False, gguf=Path("/pkg/m.gguf"), converted=True),
}


@functools.cache
def validated(overrides: tuple[str, ...]):
    return compose(list(overrides))


def configs(command: gpu_check.Command) -> tuple[argparse.Namespace, object] | None:
    """A `grpo` command (run directly or by torchrun) parsed as `grpo` parses it, and its validated config (None
    for commands that take no configuration); None when it is not a grpo command."""
    argv = command.argv
    if "grpo_cli" not in argv:
        return None
    args, extra = build_parser().parse_known_args(argv[argv.index("grpo_cli") + 1 :])
    assert not extra or all("=" in item for item in extra), extra
    overrides = [*getattr(args, "overrides", []), *extra]
    return args, validated(tuple(overrides)) if hasattr(args, "overrides") else None


@pytest.mark.parametrize("machine", MACHINES.values(), ids=MACHINES.keys())
def test_the_plan_runs_every_step_within_the_window_with_commands_that_validate(machine):
    steps = gpu_check.plan(machine)
    assert [step.name for step in steps] == STEPS
    assert sum(step.limit_s for step in steps) <= gpu_check.WINDOW_S == 480
    assert all(step.commands and step.limit_s > 0 for step in steps)
    commands = {(step.name, command.name): command for step in steps for command in step.commands}
    assert (("prepare", "convert") in commands) == (not machine.converted)
    for (step, name), command in commands.items():
        parsed = configs(command)
        if parsed is None:  # the batch probe takes overrides too
            assert command.argv[1] == "scripts/gpu_batch_probe.py"
            config = validated(tuple(command.argv[command.argv.index(gpu_check.RECIPE):]))
            assert (config.sampler.name, config.sampler.batch_size) == ("hf", None)  # the automatic batch
            continue
        args, config = parsed
        if config is None:
            assert args.command in ("export", "merge"), (step, name)
            continue
        assert config.recipe == "gpu_check" and config.sampler.name == machine.sampler, (step, name)
        assert config.model.name_or_path == str(gpu_check.MODEL) or step == "export"
    train = {step: configs(commands[(step, "train")])[1] for step in ("full", "lora", "async", "fsdp")}
    assert [train[step].train.max_steps for step in train] == [5, 5, 3, 2]
    assert train["lora"].model.lora.enabled and not train["full"].model.lora.enabled
    assert train["async"].train.async_steps == 1 and train["full"].sampler.enable_sleep_mode
    assert len({config.train.output_dir for config in train.values()}) == 4  # no run refuses a used directory
    fsdp = commands[("fsdp", "train")].argv
    assert f"--nproc-per-node={machine.ranks}" in fsdp and machine.ranks == min(machine.gpus, 2)
    doctor = commands[("prepare", "doctor")].argv
    assert ("--vllm-start" in doctor) == machine.vllm


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0():
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "scripts/gpu_check.py"], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("\n") == 1 and "no CUDA device" in result.stdout


def test_the_plan_lists_each_step_its_limit_and_commands(capsys):
    assert gpu_check.main(["--plan"]) == 0
    listed = capsys.readouterr().out
    for step in STEPS:
        assert f"\n{step}  (limit " in f"\n{listed}"
    assert "python -m grpo_cli bench --json" in listed and "465 s in all" in listed


# --- the checks, on runs written by hand ----------------------------------------------------------------------


def write_run(run_dir: Path, metrics: list[dict], start: dict[str, torch.Tensor], trained: dict[str, torch.Tensor]) -> None:
    """A run directory as grpo train writes it: config.yaml, metrics.jsonl, checkpoints/last -> step_000005, its
    starting model in run_dir/start."""
    (run_dir / "start").mkdir(parents=True)
    save_file(start, run_dir / "start" / "model.safetensors")
    step_dir = run_dir / "checkpoints" / "step_000005"
    step_dir.mkdir(parents=True)
    save_file(trained, step_dir / "model.safetensors")
    (run_dir / "checkpoints" / "last").write_text("step_000005\n")
    config = {"model": {"name_or_path": str(run_dir / "start"), "dtype": "bfloat16"}, "train": {"max_initial_mismatch": 0.05}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))


def step_metrics(step: int, mismatch: float, kl: float, reward: float = 0.5) -> dict:
    return {"step": step, "logprob_mismatch/mean": mismatch, "logprob_mismatch/max": 4 * mismatch, "kl/mean": kl,
            "reward/mean": reward, "loss": 0.1, "grad_norm": 0.8, "nonfinite": 0.0, "time/step_s": 2.0, "tokens_per_s": 900.0}


START = {"w": torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float32)}
# As the learner loads it (bfloat16), then float32 master weights that moved: 3 of 4 elements changed.
TRAINED = {"w": START["w"].to(torch.bfloat16).float() + torch.tensor([0.0, 1e-4, 1e-4, 1e-4])}
GOOD = [step_metrics(1, 0.010, 0.0), *(step_metrics(s, 0.012, 0.002 * s) for s in (2, 3, 4, 5))]


def checks_of(tmp_path, metrics, trained=TRAINED, returncode=0) -> dict[str, gpu_check.Check]:
    write_run(tmp_path, metrics, START, trained)
    ran = gpu_check.Ran(gpu_check.Command("train", ["grpo"]), tmp_path / "train.log", returncode=returncode)
    (tmp_path / "train.log").write_text("error: something broke\n")
    checks = gpu_check.train_checks(ran, tmp_path, 5, "vllm", lora=False)
    return {check.name.split(" ")[0] if check.name.startswith("vllm") else check.name: check for check in checks}


def test_a_healthy_run_passes_every_train_check(tmp_path):
    checks = checks_of(tmp_path, GOOD)
    assert {name: check.status for name, check in checks.items()} == dict.fromkeys(checks, "PASS"), checks
    assert checks["weights changed"].figure.startswith("75.0% of the weights changed")
    assert checks["vllm"].figure.startswith("mismatch by step 0.0100, 0.0120, 0.0120, 0.0120, 0.0120;")


@pytest.mark.parametrize("broken, failed", [
    ({1: {"logprob_mismatch/mean": 0.06}}, "step-1 log-prob mismatch"),  # above train.max_initial_mismatch
    ({3: {"reward/mean": math.nan}}, "rewards, losses, gradients finite"),
    ({4: {"nonfinite": 1.0}}, "rewards, losses, gradients finite"),
    ({5: {"logprob_mismatch/mean": 0.08}}, "vllm"),  # the engine lost the weights at the last sync
])
def test_each_train_check_fails_on_what_it_guards(tmp_path, broken, failed):
    metrics = [m | broken.get(m["step"], {}) for m in GOOD]
    checks = checks_of(tmp_path, metrics)
    assert [name for name, check in checks.items() if check.status == "FAIL"] == [failed]


def test_unchanged_or_bfloat16_weights_fail_and_a_failed_run_says_why(tmp_path):
    # Updates rounded away in bfloat16: the checkpoint is the start as loaded.
    rounded = {"w": START["w"].to(torch.bfloat16)}
    assert checks_of(tmp_path / "a", GOOD, trained=rounded)["weights changed"].status == "FAIL"
    failed = checks_of(tmp_path / "b", GOOD, returncode=1)
    assert list(failed) == ["5 steps"] and failed["5 steps"].figure == "train exit 1: error: something broke"
    assert checks_of(tmp_path / "c", GOOD[:4])["5 steps"].figure == "metrics.jsonl holds steps [1, 2, 3, 4]"


def test_the_bench_report_is_read_from_among_the_engine_log_lines():
    report = {"step": 1.5, "mfu": None}
    output = "INFO 12-07 engine started\n" + json.dumps(report, indent=2) + "\nINFO 12-07 shut down {x}\n"
    assert gpu_check.last_json(output) == report
    assert gpu_check.last_json("INFO no report\n{\n") is None


# The LoRA run's mismatch and kl/mean by step, measured on CPU with its settings (bf16, lr 1e-3): synced, and with
# the weight sync switched off after the first (a stale engine).
SYNCED = ([0.0410, 0.0386, 0.0573, 0.0569, 0.0621], [0.0, 0.0274, 0.3184, 0.5215, 2.0576])
STALE = ([0.0410, 0.1263, 0.2003, 0.2257], [0.0, 0.0305, 0.0813, 0.0771])


@pytest.mark.parametrize("mismatch, kl, status", [
    (*SYNCED, "PASS"),
    (*STALE, "FAIL"),
    (SYNCED[0], [0.0, 0.01, 0.02, 0.03, 0.04], "FAIL"),  # the policy hardly moved: a stale engine would not show
])
def test_the_lora_engine_follows_the_policy_as_measured_synced_not_stale(mismatch, kl, status):
    metrics = [{"logprob_mismatch/mean": m, "kl/mean": k} for m, k in zip(mismatch, kl)]
    assert gpu_check.follows_check(metrics, "vllm", 0.05, lora=True).status == status


def test_the_readme_names_each_step_with_its_limit():
    """docs/testing.md (What is tested where) maps each GPU path to a step as `name (limit s)`: kept to the plan's."""
    section = (REPO / "docs" / "testing.md").read_text()
    for step in gpu_check.plan(MACHINES["1 GPU, vLLM, model to convert"]):
        assert f"{step.name} ({step.limit_s} s)" in section, step.name
    assert f"the limits sum to {sum(step.limit_s for step in gpu_check.plan(MACHINES['1 GPU, no vLLM']))} s" in section


def test_each_command_stops_at_its_step_s_limit_and_side_by_side_commands_share_it(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "LOGS", tmp_path)
    nap = "import time; print('start', time.time()); time.sleep(1); print('end', time.time())"
    naps = [gpu_check.Command(name, [sys.executable, "-c", nap]) for name in ("a", "b")]
    hang = gpu_check.Command("hang", [sys.executable, "-c", "import time; time.sleep(60)"])
    memory = gpu_check.DeviceMemory()
    try:
        together = gpu_check.run_step(gpu_check.Step("s", 20, "", naps, None, side_by_side=True), 20, memory)
        stopped = gpu_check.run_step(gpu_check.Step("t", 1, "", [hang, naps[0]], None), 1, memory)
    finally:
        memory.close()
    times = {name: dict(line.split() for line in together.ran[name].output().splitlines()[1:]) for name in "ab"}
    assert together.ran["a"].ok and together.ran["b"].ok
    assert float(times["b"]["start"]) < float(times["a"]["end"])  # side by side, not one after the other
    assert stopped.ran["hang"].timed_out and stopped.seconds < 10  # the step's limit, not the command's 60 s
    assert stopped.ran["a"].failure() == "a did not run: an earlier command failed"
    assert stopped.ran["hang"].failure() == "hang ran past the step's limit and was stopped"


def test_a_run_goes_on_after_a_failure_writes_every_check_and_exits_1(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "OUT", tmp_path)
    monkeypatch.setattr(gpu_check, "LOGS", tmp_path / "logs")
    monkeypatch.chdir(tmp_path)  # run_all moves to the checkout; this puts the test's directory back after

    def broken(outcome):
        raise KeyError("mfu")

    def printed(outcome):
        return [gpu_check.Check("echo", "PASS", outcome.ran["echo"].output().split()[-1])]

    echo = gpu_check.Command("echo", [sys.executable, "-c", "print('fine')"])
    steps = [gpu_check.Step("first", 10, "", [echo], broken), gpu_check.Step("second", 10, "", [echo], printed)]
    assert gpu_check.run_all(MACHINES["1 GPU, no vLLM"], steps) == 1
    found = json.loads((tmp_path / "gpu-check.json").read_text())
    assert (found["PASS"], found["FAIL"], found["SKIP"], found["sampler"]) == (1, 1, 0, "hf")
    assert [check["figure"] for step in found["steps"] for check in step["checks"]] == [
        "the check broke: KeyError: 'mfu'", "fine"]
    assert found["steps"][1]["commands"][0]["returncode"] == 0
