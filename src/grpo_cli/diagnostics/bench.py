"""`grpo bench`: seconds per phase of a few GRPO steps of a configuration, next to the bare engine limits.

After one warm-up step, each of `--steps` steps runs as `grpo train` runs it (collect_rollouts, learn_from)
and then, on that step's very prompts and completions, the two limits the phases are held to:
    bare generate   one `model.generate` call with num_return_sequences=G over all the prompts (hf), or one
                    `LLM.generate` call (vllm): the same seed, settings and weights, no log-probs kept
    bare fwd+bwd    forward and backward of the same tokens, every prompt repeated per completion (unshared),
                    packed by length under the learner's token budget (Learner.bare_forward_backward), loss = a
                    plain cross-entropy of the completion tokens, gradients discarded
Reported (means over the measured steps):
    sampler vs bare = bare generate / time/sample_s        >= 0.95 is the target; above 1 beats the bare call
    learner vs bare = bare fwd+bwd / time/learn_s          >= 0.9 is the target
    step / bare     = time/step_s / (bare generate + bare fwd+bwd)   what the step costs over the two limits
    tokens/s        = generated tokens / time/step_s
    peak memory     torch's peak allocation on GPU, the process's peak resident set on CPU
    MFU (GPU only)  6 x parameters x learner tokens / time/step_s / the device's peak bf16 dense FLOP/s
The learner's weights change as in training; the bare passes change nothing (gradients are zeroed, the
sampler's RNG is forked).
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import closing

import torch

from grpo_cli.config import Config

# Peak dense bf16 FLOP/s by device name (substring of torch.cuda.get_device_name); MFU is left out elsewhere.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}
PHASES = ("sample", "verify", "learn", "sync", "step")


def run_bench(config: Config, steps: int) -> dict:
    """A warm-up step, then `steps` measured steps with their bare limits; the report as a dict (see the
    module docstring), seconds as means over the measured steps."""
    from grpo_cli.data.loaders import load_examples
    from grpo_cli.diagnostics.preflight import peak_memory_gib
    from grpo_cli.models import load_model, load_tokenizer
    from grpo_cli.sampler import build_sampler
    from grpo_cli.sampler.base import sampling_seed
    from grpo_cli.training.learner import Learner
    from grpo_cli.training.rollout import collect_rollouts
    from grpo_cli.training.schedule import PromptSchedule
    from grpo_cli.training.trainer import learn_from
    from grpo_cli.verifier import build_verifier

    examples = load_examples(config, "train")
    tokenizer = load_tokenizer(config.model.name_or_path)
    learner = Learner(config, load_model(config.model), total_steps=steps + 1)
    schedule = PromptSchedule(len(examples), config.train.prompts_per_step, config.train.epochs, config.train.seed)
    totals = dict.fromkeys([*PHASES, "bare_generate", "bare_fwd_bwd", "generated_tokens", "learner_tokens"], 0.0)
    with closing(build_sampler(config, learner.full_model, tokenizer)) as sampler, build_verifier(config.verifier) as verifier:
        for step in range(1, steps + 2):
            step_examples = [examples[i] for i in schedule.indices(step - 1)]
            rollouts = collect_rollouts(config, step, step_examples, tokenizer, sampler, verifier)
            metrics, _ = learn_from(config, step, rollouts, learner, sampler)
            if step == 1:  # warm-up: first calls allocate and compile
                peak_memory_gib(learner.device)
                continue
            for phase in PHASES:
                totals[phase] += metrics[f"time/{phase}_s"]
            seed = sampling_seed(config.train.seed, "train", step)
            totals["bare_generate"] += bare_generate(sampler, rollouts.prompt_ids, config.algorithm.group_size, seed)
            seconds, tokens = bare_forward_backward(learner, rollouts)
            totals["bare_fwd_bwd"] += seconds
            totals["learner_tokens"] += tokens
            totals["generated_tokens"] += sum(len(c.token_ids) for group in rollouts.groups for c in group)
    report = {key: value / steps for key, value in totals.items()}
    report |= {
        "steps": steps,
        "device": str(learner.device),
        "sampler_vs_bare": report["bare_generate"] / report["sample"],
        "learner_vs_bare": report["bare_fwd_bwd"] / report["learn"],
        "step_vs_bare": report["step"] / (report["bare_generate"] + report["bare_fwd_bwd"]),
        "tokens_per_s": report["generated_tokens"] / report["step"],
        "peak_memory_gib": peak_memory_gib(learner.device),
        "mfu": mfu(learner, report["learner_tokens"], report["step"]),
    }
    return report


@torch.no_grad()
def bare_generate(sampler, prompt_ids: list[list[int]], n: int, seed: int) -> float:
    """Seconds of one plain generate call for n completions of each prompt, as the sampler would sample them."""
    from grpo_cli.sampler.base import new_token_budget, sampling_seed

    temperature = sampler.config.temperature
    if hasattr(sampler, "llm"):  # vLLM: one LLM.generate with the sampler's own sampling parameters
        from vllm.inputs import TokensPrompt

        from grpo_cli.sampler.vllm import torch_threads

        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids]
        budgets = [new_token_budget(sampler.config.max_new_tokens, len(ids), sampler.max_model_len, "sampler.max_model_len") for ids in prompt_ids]
        params = [sampler.sampling_params(n, sampling_seed(seed, i), temperature, budget) for i, budget in enumerate(budgets)]
        with sampler.awake(), torch_threads(sampler.engine_threads):  # sleep mode: it slept since the step's generate
            tic = time.perf_counter()
            sampler.llm.generate(prompts, params, use_tqdm=False)
            return time.perf_counter() - tic
    from grpo_cli.models import compute_autocast
    from grpo_cli.sampler.hf import cuda_devices, left_padded, plain_generation_config

    model = sampler.model
    input_ids, attention_mask = left_padded(prompt_ids, sampler.pad_token_id, model.device)
    width = input_ids.shape[1]
    max_new_tokens = new_token_budget(sampler.config.max_new_tokens, width, model.config.max_position_embeddings, "max_position_embeddings")
    generation_config = sampler.generation_config(temperature, max_new_tokens)
    generation_config.num_return_sequences = n
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=cuda_devices(model)), plain_generation_config(model), \
                compute_autocast(model.device, sampler.compute_dtype):
            torch.manual_seed(seed)
            _synchronize(model.device)
            tic = time.perf_counter()
            model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config,
                logits_processor=sampler.sampling_processors(temperature),
            )
            _synchronize(model.device)
            return time.perf_counter() - tic
    finally:
        model.train(was_training)


def bare_forward_backward(learner, rollouts) -> tuple[float, int]:
    """Seconds of Learner.bare_forward_backward over every completion of `rollouts` with its prompt (unshared,
    packed by length under the learner's token budget); and the tokens those passes computed (padding aside)."""
    from grpo_cli.training.learner import RolloutBatch

    G = len(rollouts.groups[0])
    batch = RolloutBatch.build(rollouts.prompt_ids, rollouts.groups, torch.zeros(len(rollouts.groups) * G))
    _synchronize(learner.device)
    tic = time.perf_counter()
    learner.bare_forward_backward(batch)
    _synchronize(learner.device)
    return time.perf_counter() - tic, int(batch.attention_mask.sum())


def mfu(learner, tokens: float, seconds: float) -> float | None:
    """Model FLOPs utilization of a step on GPU (None on CPU or an unlisted device)."""
    if learner.device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(learner.device)
    peak = next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)
    if peak is None:
        return None
    params = sum(p.numel() for p in learner.policy.parameters())
    return 6 * params * tokens / seconds / peak


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def format_table(report: dict) -> str:
    """The report as an aligned table, seconds per step."""
    rows = [(f"time/{phase}_s", f"{report[phase]:.3f}") for phase in PHASES]
    rows += [
        ("bare generate s", f"{report['bare_generate']:.3f}"),
        ("bare fwd+bwd s", f"{report['bare_fwd_bwd']:.3f}"),
        ("sampler vs bare (bare / sample)", f"{report['sampler_vs_bare']:.2f}"),
        ("learner vs bare (bare / learn)", f"{report['learner_vs_bare']:.2f}"),
        ("step / (sum of bare)", f"{report['step_vs_bare']:.2f}"),
        ("generated tokens/s", f"{report['tokens_per_s']:.0f}"),
        ("peak memory GiB", f"{report['peak_memory_gib']:.2f}"),
        ("MFU", "n/a (CPU)" if report["mfu"] is None else f"{report['mfu']:.1%}"),
    ]
    width = max(len(name) for name, _ in rows)
    header = f"grpo bench: {report['steps']} steps after a warm-up, {report['device']}, {torch.get_num_threads()} torch threads"
    return "\n".join([header, *(f"  {name:<{width}}  {value:>10}" for name, value in rows)])


def bench_command(args: argparse.Namespace, config: Config) -> None:
    report = run_bench(config, args.steps)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
