"""Run health checks: the ways GRPO runs go wrong, each turned into a warning with its fix.

`RunMonitor.after_step(metrics)` and `RunMonitor.after_eval(results)` return warning lines; the trainer
prints them and records them in metrics.jsonl, so a user reading either sees the same story. The history
the checks keep (`state_dict`) goes into every checkpoint, so a resumed run warns as an uninterrupted one.
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass, field, fields

from grpo_cli.config import TrainConfig

# A streak this long of mostly zero-variance groups means most prompts give no gradient.
ZERO_VARIANCE_FRACTION = 0.5
ZERO_VARIANCE_STREAK = 3
# "Early on": the first steps, when a too-hard task or a too-cold sampler shows up.
EARLY_STEPS = 5
MIN_POSITIVE_GROUP_FRACTION = 0.3
# KL to the reference: a jump by this factor over the recent median is a spike; below the floor for a
# streak (after the first update) it has collapsed: the policy is not moving away from the reference.
KL_SPIKE_FACTOR = 10.0
KL_SPIKE_FLOOR = 0.01
KL_COLLAPSE_FLOOR = 1e-9
KL_HISTORY = 10
TRUNCATION_RATE = 0.2
# A step where nothing scored and most completions had no answer the verifier could read.
PARSE_FAILURE_RATE = 0.5
# Eval: pass@G up by this much while pass@1 is up by less than the flat margin.
PASS_AT_G_RISE = 0.05
PASS_AT_1_FLAT = 0.01
# Training reward up by this much while eval pass@1 went down: the policy may be exploiting the verifier.
HACKING_REWARD_RISE = 0.1
# RunMonitor fields set from the config rather than learned during the run.
SETTINGS = ("kl_coef", "max_initial_mismatch")


@dataclass
class RunMonitor:
    kl_coef: float
    max_initial_mismatch: float = TrainConfig.max_initial_mismatch  # nats per token
    max_retention_drift: float = 1.10  # train.max_retention_drift
    zero_variance_streak: int = 0
    kl_collapse_streak: int = 0
    kl_history: list[float] = field(default_factory=list)
    early_positive: list[float] = field(default_factory=list)
    first_reward: float | None = None
    last_reward: float | None = None
    evals: list[dict] = field(default_factory=list)

    def state_dict(self) -> dict:
        """The history the checks depend on (not the settings, which come from the config)."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name not in SETTINGS}

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, copy.deepcopy(value))

    def after_step(self, step: int, metrics: dict) -> list[str]:
        warnings = []
        # Before the first update the learner scores the sampler's own policy: only numerics may differ.
        # (None: every group was filtered out, nothing was compared.)
        if step == 1 and (metrics.get("logprob_mismatch/mean") or 0.0) > self.max_initial_mismatch:
            warnings.append(
                f"step 1, before any update: the learner's log-probs differ from the sampler's by "
                f"{metrics['logprob_mismatch/mean']:.3g} nats per token (> train.max_initial_mismatch="
                f"{self.max_initial_mismatch:g}); they should agree up to numerics, or the ratios and KL are wrong. "
                "Likely causes: model.dtype (sampler and learner in different precision), a chat template applied "
                "on one side only, weights not synced to the sampler, or sampler.top_p/top_k truncation."
            )
        self.last_reward = metrics["reward/correct_mean"]
        if self.first_reward is None:
            self.first_reward = self.last_reward

        if metrics["groups/zero_variance_frac"] >= ZERO_VARIANCE_FRACTION:
            self.zero_variance_streak += 1
            if self.zero_variance_streak == ZERO_VARIANCE_STREAK:
                warnings.append(
                    f"{metrics['groups/zero_variance_frac']:.0%} of groups had identical rewards for "
                    f"{ZERO_VARIANCE_STREAK} steps: they give no gradient. Fix: raise sampler.temperature or "
                    "algorithm.group_size, or use easier prompts (data.difficulty)."
                )
        else:
            self.zero_variance_streak = 0

        if step <= EARLY_STEPS:
            self.early_positive.append(metrics["groups/any_positive_frac"])
            if step == EARLY_STEPS and statistics.mean(self.early_positive) < MIN_POSITIVE_GROUP_FRACTION:
                warnings.append(
                    f"only {statistics.mean(self.early_positive):.0%} of groups had a positive reward in the first "
                    f"{EARLY_STEPS} steps (< {MIN_POSITIVE_GROUP_FRACTION:.0%}): the task is too hard for this model. "
                    "Fix: raise sampler.temperature or algorithm.group_size, or an easier curriculum (data.difficulty)."
                )

        if self.kl_coef > 0 and metrics.get("kl/mean") is not None:  # None: a step with no update
            warnings += self._check_kl(step, metrics["kl/mean"])

        if metrics["reward/correct_mean"] == 0 and metrics["verifier/parse_failure_frac"] > PARSE_FAILURE_RATE:
            warnings.append(
                f"no completion was correct and the verifier found no answer in {metrics['verifier/parse_failure_frac']:.0%} "
                "of them: the extraction mode or marker likely does not match how the prompt asks for the answer. "
                "Check verifier.extract and verifier.marker against data.prompt_template (and samples.jsonl)."
            )

        if metrics["completions/truncated_frac"] > TRUNCATION_RATE:
            warnings.append(
                f"{metrics['completions/truncated_frac']:.0%} of completions hit sampler.max_new_tokens="
                f"{metrics['completions/max_new_tokens']} and were cut off (no final answer, reward 0). "
                "Fix: raise sampler.max_new_tokens, or set algorithm.mask_truncated=true."
            )
        return warnings

    def _check_kl(self, step: int, kl: float) -> list[str]:
        warnings = []
        if len(self.kl_history) >= 3:
            median = statistics.median(self.kl_history[-KL_HISTORY:])
            if kl > KL_SPIKE_FLOOR and kl > KL_SPIKE_FACTOR * median:
                warnings.append(
                    f"KL to the reference spiked to {kl:.4g} ({kl / max(median, 1e-12):.0f}x its recent median "
                    f"{median:.3g}): the policy is moving fast. Fix: lower optimizer.lr or raise algorithm.kl_coef."
                )
        # The first update starts from the reference itself, where KL is exactly 0.
        if step > 1 and kl < KL_COLLAPSE_FLOOR:
            self.kl_collapse_streak += 1
            if self.kl_collapse_streak == 3:
                warnings.append(
                    "KL to the reference has been 0 for 3 steps: the policy is not changing. Check optimizer.lr "
                    "(too small?) and that updates reach the sampler."
                )
        else:
            self.kl_collapse_streak = 0
        self.kl_history.append(kl)
        return warnings

    def after_eval(self, results: dict, pass_at: list[int]) -> list[str]:
        self.evals.append(results)
        retention = self._check_retention(results)
        if len(self.evals) < 2:
            return retention
        first, last = self.evals[0], self.evals[-1]
        warnings = []
        top = f"pass@{max(pass_at)}"
        if max(pass_at) > 1 and top in last:
            rise_g = last[top] - first[top]
            rise_1 = last["pass@1"] - first["pass@1"]
            if rise_g >= PASS_AT_G_RISE and rise_1 < PASS_AT_1_FLAT:
                warnings.append(
                    f"eval {top} rose {rise_g:+.1%} since the start while pass@1 moved {rise_1:+.1%}: the model "
                    "samples the answer more often but does not prefer it. Judge the run by pass@1."
                )
        if (
            self.first_reward is not None
            and self.last_reward - self.first_reward >= HACKING_REWARD_RISE
            and last["pass@1"] < first["pass@1"]
        ):
            warnings.append(
                f"training reward rose {self.last_reward - self.first_reward:+.2f} while eval pass@1 fell "
                f"{last['pass@1'] - first['pass@1']:+.1%}: the policy may be exploiting the verifier. "
                "Read samples.jsonl for rewarded completions that are wrong."
            )
        return retention + warnings

    def _check_retention(self, results: dict) -> list[str]:
        ratio = results.get("retention/ratio")
        if ratio is None or ratio <= self.max_retention_drift:
            return []
        return [
            f"retention: the policy's NLL on eval.retention_path is {ratio:.2f}x the starting model's "
            f"({results['retention/nll']:.3f} vs {results['retention/nll_start']:.3f} nats/token, above "
            f"train.max_retention_drift={self.max_retention_drift:g}): general ability is drifting. Fix: raise "
            "algorithm.kl_coef, lower optimizer.lr, or merge with the reference (train.merge_with_reference=0.7)."
        ]
