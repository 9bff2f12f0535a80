"""Rollouts: G per prompt, single-turn (environment.name=none) or multi-turn with an environment's tools.

A multi-turn rollout alternates model turns and environment observations over any sampler:

    prompt  <- env.reset(example), tokenized (with the chat template's tools when the tool format is chat)
    turn 1  <- sampler.generate(prompts, n=G, stop=the tool calls' closing tags)
    repeat while turns < environment.max_turns:
        observation <- env.step(turn text)          in the environment worker pool; None: the rollout is done
        tokens      += the observation's tokens     (tokenized alone: the model's tokens are never re-tokenized)
        turn t      <- sampler.generate(prompt + tokens, n=1)   for every live rollout, in one call
A rollout is cut (finish_reason "length") when a turn runs out of sampler.max_new_tokens, when its tokens
after the prompt would pass environment.max_total_tokens (or the sampler's context_length with the prompt),
or when its last allowed turn calls a tool.

The result per rollout is one Completion whose token_ids are everything after the prompt, model_mask True
at the tokens the model wrote, log-prob 0 at the environment's, and transcript the turns in order:
    {"role": "model", "text": ...}
    {"role": "tool", "tool": name or None, "input": ..., "output": ..., "error": bool}
The verifier scores the last model turn (final_texts).

`collect_rollouts` is one training step's sampling and scoring (with DAPO's resample rounds and torchrun's
shares); the loop (trainer.py) and the one-step-ahead sampler process (pipeline.py) both call it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch

from grpo_cli.algo.rewards import overlong_penalty, per_component_rewards
from grpo_cli.algo.stats import zero_variance_groups
from grpo_cli.config import Config
from grpo_cli.data import Example
from grpo_cli.data.prompts import encode_prompt
from grpo_cli.environment import Environments
from grpo_cli.sampler.base import Completion, OnGroups, sampling_seed
from grpo_cli.training import distributed
from grpo_cli.verifier.rewards import component_weights, reward_functions
from grpo_cli.verifier.score import Score


@dataclass
class SampledGroups:
    """prompt_ids[j] and groups[j] (n Completions) for example j; env_rewards [N] flat, group-major, when
    environment.reward uses them; env_s: seconds spent in environment steps and rewards."""

    prompt_ids: list[list[int]]
    groups: list[list[Completion]]
    env_rewards: list[float] | None = None
    env_s: float = 0.0


@dataclass
class _Rollout:
    environment: object
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    model_mask: list[bool] = field(default_factory=list)
    transcript: list[dict] = field(default_factory=list)
    truncated: bool = False


def sample_groups(
    sampler, tokenizer, examples: list[Example], n: int, seed: int, config: Config,
    environments: Environments | None = None, temperature: float | None = None, on_groups: OnGroups | None = None,
) -> SampledGroups:
    """n rollouts per example: sampler.generate's completions when `environments` is None, else multi-turn
    rollouts (module docstring). `temperature` overrides sampler.temperature (eval). `on_groups` (single turn
    only) gets runs of finished groups while generation goes on, as Sampler.generate's does."""
    if environments is None:
        prompt_ids = [encode_prompt(example, tokenizer, config.data) for example in examples]
        groups = sampler.generate(prompt_ids, n=n, seed=seed, temperature=temperature, on_groups=on_groups) if examples else []
        return SampledGroups(prompt_ids, groups)
    return _multi_turn(sampler, tokenizer, examples, n, seed, config, environments, temperature)


def _multi_turn(sampler, tokenizer, examples, n, seed, config, environments: Environments, temperature) -> SampledGroups:
    env_config = config.environment
    env_s = 0.0
    rollouts, prompt_ids = [], []
    for example in examples:
        group = [_Rollout(environments.new()) for _ in range(n)]
        first_prompts = [rollout.environment.reset(example) for rollout in group]  # each environment starts; one prompt
        prompt_ids.append(environments.prompt_ids(first_prompts[0]))
        rollouts += group
    if not rollouts:
        return SampledGroups([], [])
    # Tokens after the prompt: at most max_total_tokens, and within the model's positions.
    budgets = [min(env_config.max_total_tokens, sampler.context_length - len(prompt_ids[i // n])) for i in range(len(rollouts))]
    live = list(range(len(rollouts)))
    for turn in range(1, env_config.max_turns + 1):
        if turn == 1:
            turns = [c for group in sampler.generate(prompt_ids, n=n, seed=seed, temperature=temperature, stop=environments.stop) for c in group]
        else:
            prefixes = [prompt_ids[i // n] + rollouts[i].token_ids for i in live]
            generated = sampler.generate(prefixes, n=1, seed=sampling_seed(seed, "turn", turn), temperature=temperature, stop=environments.stop)
            turns = [group[0] for group in generated]
        stepping = []
        for i, completion in zip(live, turns):
            rollout = rollouts[i]
            _append_turn(rollout, completion, budgets[i] - len(rollout.token_ids), tokenizer)
            calls_tool = any(stop in rollout.transcript[-1]["text"] for stop in environments.stop)
            if rollout.truncated or (turn == env_config.max_turns and calls_tool):
                rollout.truncated = True
            elif turn < env_config.max_turns:
                stepping.append(i)
        tic = time.perf_counter()
        observations = _step(environments, [rollouts[i] for i in stepping])
        env_s += time.perf_counter() - tic
        live = []
        for i, observation in zip(stepping, observations):
            if observation is not None and _append_observation(rollouts[i], observation, environments, budgets[i]):
                live.append(i)
        if not live:
            break
    completions = [_completion(rollout, tokenizer) for rollout in rollouts]
    env_rewards = None
    if env_config.reward != "verifier":
        tic = time.perf_counter()
        env_rewards = environments.rewards([r.environment for r in rollouts], [r.transcript for r in rollouts])
        env_s += time.perf_counter() - tic
    groups = [completions[j * n : (j + 1) * n] for j in range(len(examples))]
    return SampledGroups(prompt_ids, groups, env_rewards, env_s)


def _append_turn(rollout: _Rollout, completion: Completion, budget: int, tokenizer) -> None:
    """Add a model turn, cut to `budget` tokens (then the rollout is truncated)."""
    tokens, logprobs, text = completion.token_ids, completion.logprobs, completion.text
    if len(tokens) > budget:
        tokens, logprobs = tokens[:budget], logprobs[:budget]
        text = tokenizer.decode(tokens, skip_special_tokens=True)
    rollout.truncated = completion.finish_reason == "length" or len(tokens) < len(completion.token_ids)
    rollout.token_ids += tokens
    rollout.logprobs += logprobs
    rollout.model_mask += [True] * len(tokens)
    rollout.transcript.append({"role": "model", "text": text})


def _step(environments: Environments, rollouts: list[_Rollout]):
    """Each rollout's environment answers its last model turn (in the worker pool)."""
    stepped = [rollout.environment for rollout in rollouts]
    observations = environments.step(stepped, [rollout.transcript[-1]["text"] for rollout in rollouts])
    for rollout, environment in zip(rollouts, stepped):
        rollout.environment = environment
    return observations


def _append_observation(rollout: _Rollout, observation, environments: Environments, budget: int) -> bool:
    """Add the observation's tokens; False (the rollout is truncated) when they and one more model token
    do not fit in the rollout's `budget` of tokens after the prompt."""
    rollout.transcript.append(
        {"role": "tool", "tool": observation.tool, "input": observation.input, "output": observation.text, "error": observation.error}
    )
    ids = environments.observation_ids(observation)
    if len(rollout.token_ids) + len(ids) >= budget:
        rollout.truncated = True
        return False
    rollout.token_ids += ids
    rollout.logprobs += [0.0] * len(ids)
    rollout.model_mask += [False] * len(ids)
    return True


def _completion(rollout: _Rollout, tokenizer) -> Completion:
    return Completion(
        token_ids=rollout.token_ids,
        logprobs=rollout.logprobs,
        text=tokenizer.decode(rollout.token_ids, skip_special_tokens=True),
        finish_reason="length" if rollout.truncated else "stop",
        model_mask=rollout.model_mask,
        transcript=rollout.transcript,
    )


def final_texts(completions: list[Completion]) -> list[str]:
    """What the verifier scores: a multi-turn rollout's last model turn, a single-turn completion's text."""
    return [
        next(record["text"] for record in reversed(c.transcript) if record["role"] == "model") if c.transcript else c.text
        for c in completions
    ]


def with_environment_rewards(scores: list[Score], env_rewards: list[float] | None, mode: str) -> list[Score]:
    """The verifier's scores with environment.reward applied: `environment` replaces each reward with the
    environment's, `sum` adds it (correct, and so pass@k, stays the verifier's verdict)."""
    if env_rewards is None:
        return scores
    return [
        dataclasses.replace(score, reward=env_reward if mode == "environment" else score.reward + env_reward)
        for score, env_reward in zip(scores, env_rewards, strict=True)
    ]


def env_metrics(completions: list[Completion]) -> dict[str, float]:
    """env/turns_mean (model turns per rollout), env/tool_calls_mean (observations per rollout),
    env/tool_errors (error observations, a count), env/truncated_frac (rollouts cut by a budget)."""
    transcripts = [c.transcript or [] for c in completions]
    tools = [[record for record in t if record["role"] == "tool"] for t in transcripts]
    count = max(len(completions), 1)
    return {
        "env/turns_mean": sum(sum(record["role"] == "model" for record in t) for t in transcripts) / count,
        "env/tool_calls_mean": sum(len(records) for records in tools) / count,
        "env/tool_errors": float(sum(record["error"] for records in tools for record in records)),
        "env/truncated_frac": sum(c.finish_reason == "length" for c in completions) / count,
    }


@dataclass
class Rollouts:
    """One step's sampled and scored groups (group-major: completion i belongs to group i // G)."""

    examples: list  # the prompts' examples, one per group
    prompt_ids: list[list[int]]
    groups: list[list]  # G sampler.base.Completion per prompt
    scores: list  # verifier.score.Score per completion
    shaped: torch.Tensor  # [N] rewards after shaping (algo/rewards.py)
    varied: torch.Tensor  # [num_groups] bool: the group's shaped rewards differ
    latencies_ms: torch.Tensor  # [N] verifier latency per completion
    resample_rounds: int
    timings: dict[str, float]


def collect_rollouts(config, step, examples, tokenizer, sampler, verifier, resample=None, environments=None) -> Rollouts:
    """Sample G completions per prompt and score them; with `environments`, G multi-turn rollouts (rollout.py)
    whose last model turn the verifier scores, environment.reward applied.

    With algorithm.filter_zero_variance and max_resample_rounds (DAPO dynamic sampling), while fewer than
    train.prompts_per_step groups have rewards that differ, round r = 1, 2, ... samples the prompts
    `resample(r)` as well; the first prompts_per_step such groups train.

    Under torchrun each rank samples and verifies its share of each round's prompts (distributed.share) and
    the groups are gathered, so advantages, group statistics and metrics are the global batch's.
    """
    G = config.algorithm.group_size
    timings = {"time/sample_s": 0.0, "time/verify_s": 0.0} | ({"time/env_s": 0.0} if environments else {})
    world = distributed.world()
    step_examples, prompt_ids, groups, scores, latencies_s = [], [], [], [], []
    for resample_round in range(config.algorithm.max_resample_rounds + 1):
        if resample_round:
            examples = resample(resample_round)
        local_examples = distributed.share(examples)
        tic = time.perf_counter()
        seed_parts = (config.train.seed, "train", step) + (("resample", resample_round) if resample_round else ())
        seed_parts += ("rank", world.rank) if world.size > 1 else ()
        checks, submitted = [], []  # verifier futures, one per run of finished groups, checked while generation goes on

        def verify(finished: list[list]) -> None:
            group_examples = [ex for ex in local_examples[len(submitted) : len(submitted) + len(finished)] for _ in range(G)]
            completions = [c for group in finished for c in group]
            checks.append(verifier.submit(
                final_texts(completions), [ex.answer for ex in group_examples], step=step, examples=group_examples,
                completion_ids=[c.token_ids for c in completions],
            ))
            submitted.extend(finished)

        sampled = sample_groups(sampler, tokenizer, local_examples, G, sampling_seed(*seed_parts), config, environments,
                                on_groups=verify)
        local_prompt_ids, local_groups = sampled.prompt_ids, sampled.groups
        timings["time/sample_s"] += time.perf_counter() - tic - sampled.env_s
        if environments:
            timings["time/env_s"] += sampled.env_s
        if len(submitted) < len(local_groups):  # groups a sampler (or a multi-turn rollout) returned all at once
            verify(local_groups[len(submitted) :])

        tic = time.perf_counter()  # only the checks still running when generation ends
        checked = [check.result() for check in checks]
        timings["time/verify_s"] += time.perf_counter() - tic
        local_scores = [score for group_scores, _ in checked for score in group_scores]
        scores += distributed.gather(with_environment_rewards(local_scores, sampled.env_rewards, config.environment.reward))
        latencies_s += distributed.gather([latency for _, local_latencies in checked for latency in local_latencies])
        step_examples += examples
        prompt_ids += distributed.gather(local_prompt_ids)
        groups += distributed.gather(local_groups)
        completions = [c for group in groups for c in group]
        shaped = shaped_rewards(config, scores, completions, step)
        varied = ~zero_variance_groups(shaped, G)
        if not config.algorithm.filter_zero_variance or int(varied.sum()) >= config.train.prompts_per_step:
            break
    return Rollouts(
        examples=step_examples, prompt_ids=prompt_ids, groups=groups, scores=scores, shaped=shaped, varied=varied,
        latencies_ms=torch.tensor(latencies_s, dtype=torch.float64) * 1000, resample_rounds=resample_round,
        timings=timings,
    )


def shaped_rewards(config, scores, completions, step) -> torch.Tensor:
    """The rewards [B] the advantage estimator sees: the verifier's, or with verifier.rewards.normalize=
    per_component its components (each reward function one of them) normalized per group and summed
    (algo/rewards.py); plus DAPO's overlong penalty when algorithm.overlong_buffer is set."""
    G = config.algorithm.group_size
    if config.verifier.rewards.normalize == "per_component":
        weights = component_weights(config.verifier.rewards, step)
        names = [name for name in weights if weights[name]]
        functions = [f for f in reward_functions(config.verifier.rewards) if f.weight]
        # A function's None (no reward for that completion), or none at all after a failed check: NaN, left out.
        unweighted = [
            [s.components[name] / weights[name] for name in names]
            + [math.nan if s.by_function.get(f.name) is None else s.by_function[f.name] for f in functions]
            for s in scores
        ]
        rewards = per_component_rewards(
            torch.tensor(unweighted, dtype=torch.float64),
            torch.tensor([weights[name] for name in names] + [f.weight for f in functions]), G, config.algorithm.std_eps,
        ).float()
    else:
        rewards = torch.tensor([s.reward for s in scores], dtype=torch.float32)
    if config.algorithm.overlong_buffer:
        lengths = torch.tensor([len(c.token_ids) for c in completions])
        rewards = rewards + overlong_penalty(lengths, config.sampler.max_new_tokens, config.algorithm.overlong_buffer)
    return rewards
