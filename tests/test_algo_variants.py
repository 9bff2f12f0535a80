"""The algorithm zoo: names checked against the registries, DAPO's reward shaping and dynamic sampling, entropy
masking and bonus, per-component rewards by hand, and a 3-step CPU run of each variant through `grpo train`."""

import json
import math
from concurrent.futures import Future

import pytest
import torch
import yaml

from conftest import TINY_RUN
from grpo_cli.algo.loss import BatchTotals, clip_cov_mask, high_entropy_mask, policy_loss
from grpo_cli.algo.rewards import overlong_penalty, per_component_rewards
from grpo_cli.cli import main
from grpo_cli.compose import compose
from grpo_cli.config import AlgorithmConfig, Config
from grpo_cli.data import Example
from grpo_cli.errors import ConfigError
from grpo_cli.sampler.base import Completion
from grpo_cli.training.schedule import PromptSchedule, locked_prompts, set_aside_after
from grpo_cli.training.trainer import grpo_step
from grpo_cli.verifier.score import Score


@pytest.mark.parametrize(
    "override, message",
    [
        ("algorithm.advantage=rlo", "algorithm.advantage='rlo': unknown; did you mean rloo? known: grpo, rloo, reinforce_pp"),
        ("algorithm.policy_loss=dual-clip", "did you mean dual_clip? known: ppo_clip, dual_clip, cispo"),
        ("algorithm.kl_estimator=k4", "algorithm.kl_estimator='k4': unknown; did you mean k3? known: k1, k2, k3"),
        ("algorithm.loss_agg=token-mean", "did you mean token_mean?"),
        ("algorithm.overlong_buffer=24", "algorithm.overlong_buffer=24: must be below sampler.max_new_tokens=24"),
        ("algorithm.max_resample_rounds=2", "set filter_zero_variance=true"),
        ("algorithm.dual_clip_c=1", "algorithm.dual_clip_c=1: must be > 1"),
        ("algorithm.entropy_mask_top=0", "algorithm.entropy_mask_top=0: must be in (0, 1]"),
    ],
)
def test_bad_algorithm_names_and_combinations_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as error:
        compose([*TINY_RUN, override])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_scale_rewards_belongs_to_grpo_advantages():
    with pytest.raises(ConfigError, match="algorithm.scale_rewards=none: applies to algorithm.advantage=grpo only"):
        compose([*TINY_RUN, "algorithm=rloo", "algorithm.scale_rewards=none"])


def test_dapo_turns_on_all_its_parts():
    algorithm = compose([*TINY_RUN, "algorithm=dapo", "algorithm.overlong_buffer=8"]).algorithm
    assert (algorithm.clip_eps_low, algorithm.clip_eps_high) == (0.2, 0.28)  # clip-higher
    assert algorithm.loss_agg == "token_mean"  # token-level loss
    assert algorithm.filter_zero_variance and algorithm.max_resample_rounds == 3  # dynamic sampling
    assert algorithm.mask_truncated and algorithm.overlong_buffer == 8  # overlong filtering and punishment


def test_overlong_penalty_by_hand():
    # budget 20, buffer 5: no penalty up to 15 tokens, then -1/5 per token, -1 at 20
    lengths = torch.tensor([3, 15, 16, 18, 20])
    torch.testing.assert_close(overlong_penalty(lengths, 20, 5), torch.tensor([0.0, 0.0, -0.2, -0.6, -1.0]))


def test_per_component_rewards_by_hand():
    # G = 3, components (correctness, length in 1000s of chars), weights (1, -0.5):
    #   correctness 1, 0, 0: mean 1/3, std sqrt(1/3) -> (2/3, -1/3, -1/3) / sqrt(1/3)
    #   length 0.1, 0.2, 0.3: mean 0.2, std 0.1 -> (-0.1, 0, 0.1) / 0.1; weighted by -0.5
    # second group: correctness all 1 (ties: 0), length 0.4, 0.4, 0.1: mean 0.3, std sqrt(0.03)
    components = torch.tensor(
        [[1.0, 0.1], [0.0, 0.2], [0.0, 0.3], [1.0, 0.4], [1.0, 0.4], [1.0, 0.1]], dtype=torch.float64
    )
    rewards = per_component_rewards(components, torch.tensor([1.0, -0.5]), 3, 1e-4)
    s1, s2 = math.sqrt(1 / 3) + 1e-4, math.sqrt(0.03) + 1e-4
    expected = [
        2 / 3 / s1 - 0.5 * -0.1 / (0.1 + 1e-4),
        -1 / 3 / s1,
        -1 / 3 / s1 - 0.5 * 0.1 / (0.1 + 1e-4),
        -0.5 * 0.1 / s2,
        -0.5 * 0.1 / s2,
        -0.5 * -0.2 / s2,
    ]
    torch.testing.assert_close(rewards, torch.tensor(expected, dtype=torch.float64))


def test_high_entropy_mask_keeps_the_top_fraction_of_loss_tokens():
    entropy = torch.tensor([[0.5, 2.0, 9.0], [1.5, 3.0, 0.1]])
    mask = torch.tensor([[True, True, False], [True, True, True]])  # 9.0 is padding
    # 5 loss tokens: top 0.4 -> ceil(2) = the two highest, 3.0 and 2.0
    assert high_entropy_mask(entropy, mask, 0.4).tolist() == [[False, True, False], [False, True, False]]
    assert high_entropy_mask(entropy, mask, 1.0).tolist() == mask.tolist()


def test_entropy_mask_and_bonus_by_hand():
    # On-policy, token_mean over 4 tokens, A = (1, -1). pg_mask keeps tokens (0, 1) and (1, 0): the policy
    # gradient -A / 4 lands there only. The bonus -0.1 H adds d loss / d H = -0.1 / 4 on every token.
    logp = torch.full((2, 2), -1.0, dtype=torch.float64, requires_grad=True)
    entropy = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.ones(2, 2, dtype=torch.bool)
    pg_mask = torch.tensor([[False, True], [True, False]])
    config = AlgorithmConfig(loss_agg="token_mean", entropy_coef=0.1, entropy_mask_top=0.5)
    loss, _ = policy_loss(
        logp, None, None, torch.tensor([1.0, -1.0]), mask, config, totals=BatchTotals.of(mask, 4),
        entropy=entropy, pg_mask=pg_mask,
    )
    loss.backward()
    # loss = (-1 [token (0,1): -rho A] + 1 [token (1,0)]) / 4 - 0.1 x (1 + 2 + 3 + 4) / 4
    assert loss.item() == pytest.approx((-1 + 1) / 4 - 0.1 * 10 / 4, abs=1e-12)
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.25], [0.25, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(entropy.grad, torch.full((2, 2), -0.025, dtype=torch.float64))


def test_clip_cov_takes_the_gradient_from_tokens_whose_covariance_is_in_the_band():
    # 5 loss tokens (99 is padding): log-probs -0.2 -2 -3 | -3.5 -0.5, advantages 2 | -2. Means -1.84 and 0.4;
    # Cov = (logp + 1.84)(A - 0.4): 2.624, -0.256, -1.856 | 3.984, -3.216. In (1, 5): the confident token
    # with A > 0 and the unlikely one with A < 0, the two that lower the entropy most.
    logp = torch.tensor([[-0.2, -2.0, -3.0], [-3.5, -0.5, 99.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    advantages = torch.tensor([2.0, -2.0], dtype=torch.float64)
    config = AlgorithmConfig(clip_cov_frac=0.4, loss_agg="token_mean")  # max(1, floor(0.4 x 5)) = 2 tokens
    kept = clip_cov_mask(logp, advantages, mask, config, torch.Generator().manual_seed(0))
    assert kept.tolist() == [[False, True, True], [False, True, False]]

    # one token to draw (floor(0.1 x 5) = 0, at least 1): one of the two, the same for the same seed
    config = AlgorithmConfig(clip_cov_frac=0.1, loss_agg="token_mean")
    draws = [clip_cov_mask(logp, advantages, mask, config, torch.Generator().manual_seed(seed)) for seed in range(8)]
    assert {tuple(map(tuple, (mask & ~kept).nonzero().tolist())) for kept in draws} == {((0, 0),), ((1, 0),)}
    assert torch.equal(draws[3], clip_cov_mask(logp, advantages, mask, config, torch.Generator().manual_seed(3)))

    # on-policy, token_mean over 5 tokens: d loss / d logp = -A / 5 on the kept tokens, 0 on the drawn one
    logp.requires_grad_(True)
    loss, _ = policy_loss(logp, None, None, advantages, mask, config, totals=BatchTotals.of(mask, 3), pg_mask=draws[3])
    loss.backward()
    expected = torch.tensor([[-0.4, -0.4, -0.4], [0.4, 0.4, 0.0]], dtype=torch.float64).masked_fill(~draws[3], 0.0)
    torch.testing.assert_close(logp.grad, expected)


def test_clip_cov_band_must_be_ordered():
    with pytest.raises(ConfigError, match="algorithm.clip_cov_low=5.0, clip_cov_high=1.0: .* low must be below high"):
        compose([*TINY_RUN, "algorithm.clip_cov_low=5", "algorithm.clip_cov_high=1"])


class ScriptedSampler:
    """G completions per prompt, each a few tokens; the prompt's first token says which group it was."""

    def __init__(self):
        self.calls = []

    def generate(self, prompt_ids, n, seed, temperature=None, on_groups=None):
        self.calls.append((len(prompt_ids), seed))
        groups = [[Completion([5, 6, 7][: 1 + j % 3], [-1.0] * (1 + j % 3), f"{j}", "stop") for j in range(n)] for _ in prompt_ids]
        on_groups(groups)
        return groups

    def sync_weights(self, model):
        pass


class ScriptedVerifier:
    """Answer "varied": completion 0 of the group scores 1, the rest 0; any other answer: all 0 (a tie)."""

    def submit(self, texts, answers, step=0, **reward_context):
        scores = [Score(float(a == "varied" and t == "0"), a == "varied" and t == "0", None, "wrong") for t, a in zip(texts, answers)]
        done = Future()
        done.set_result((scores, [0.001] * len(texts)))
        return done


class RecordingLearner:
    def refresh_full_model(self):
        return None

    def train_on(self, batch):
        self.batch = batch
        return {"nonfinite": 0.0}


def prompts(kinds, prefix):
    return [Example(f"{prefix}{i}", f"{prefix}{i}", kind) for i, kind in enumerate(kinds)]


class CharTokenizer:
    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [1] + [2 + ord(c) % 50 for c in text]}


@pytest.mark.parametrize("max_rounds, expected_rounds, expected_groups", [(3, 2, 4), (1, 1, 3), (0, 0, 1)])
def test_dynamic_sampling_resamples_until_the_step_holds_enough_varied_groups(max_rounds, expected_rounds, expected_groups):
    # 4 prompts a step; round 0 has 1 group whose rewards differ, round 1 two more, round 2 three more
    rounds = {
        0: prompts(["varied", "tie", "tie", "tie"], "a"),
        1: prompts(["tie", "varied", "varied", "tie"], "b"),
        2: prompts(["varied", "varied", "varied", "tie"], "c"),
    }
    config = Config()
    config.algorithm = AlgorithmConfig(group_size=3, filter_zero_variance=True, max_resample_rounds=max_rounds)
    config.train.prompts_per_step = 4
    sampler, learner = ScriptedSampler(), RecordingLearner()
    metrics, groups = grpo_step(
        config, 7, rounds[0], CharTokenizer(), sampler, ScriptedVerifier(), learner, resample=rounds.__getitem__
    )
    assert metrics["groups/resample_rounds"] == expected_rounds
    assert len(sampler.calls) == expected_rounds + 1 and len({seed for _, seed in sampler.calls}) == expected_rounds + 1
    assert learner.batch.size == expected_groups * 3
    sampled = sum(4 for _ in range(expected_rounds + 1))
    assert metrics["groups/kept_frac"] == pytest.approx(expected_groups * 3 / (sampled * 3))
    # the trained groups are the first varied ones, in sampling order: a0, b1, b2, c0
    trained_prompts = [g["prompt"] for g in groups if any(a != 0 for a in g["advantages"])]
    assert trained_prompts == ["a0", "b1", "b2", "c0"][:expected_groups]


def test_resampled_prompts_depend_on_step_and_round_only():
    schedule = PromptSchedule(num_prompts=50, prompts_per_step=4, epochs=1.0, seed=3)
    assert schedule.resample_indices(5, 1) == PromptSchedule(50, 4, 1.0, 3).resample_indices(5, 1)
    assert schedule.resample_indices(5, 1) != schedule.resample_indices(5, 2)
    assert len(set(schedule.resample_indices(5, 1))) == 4


VARIANTS = {
    "rloo": ["algorithm=rloo"],
    "reinforce_pp": ["algorithm=reinforce_pp"],
    "dual_clip": ["algorithm.policy_loss=dual_clip", "algorithm.num_iterations=2"],
    "cispo": ["algorithm=cispo", "algorithm.num_iterations=2"],
    # the untrained model never stops: every completion is truncated, so overlong filtering would leave no token
    "dapo": ["algorithm=dapo", "algorithm.overlong_buffer=8", "algorithm.mask_truncated=false"],
    "entropy": ["algorithm.entropy_mask_top=0.2", "algorithm.entropy_coef=0.01"],
    "dr_grpo": ["algorithm=dr_grpo"],
    "kl_k1": ["algorithm.kl_coef=0.04", "algorithm.kl_estimator=k1"],
    "kl_k2": ["algorithm.kl_coef=0.04", "algorithm.kl_estimator=k2"],
    "per_component": ["verifier.rewards.normalize=per_component", "verifier.rewards.format_bonus=0.5"],
    # pass@2 for 2 steps, then pass@1; Clip-Cov draws from every token with a positive covariance
    "pkpo_clip_cov": ["algorithm.advantage=pkpo", "algorithm.pass_k=2", "algorithm.pass_k_anneal_steps=2",
                      "algorithm.clip_cov_frac=0.05", "algorithm.clip_cov_low=0"],
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_three_training_steps_of_each_variant(variant, tiny_model, tmp_path):
    out = tmp_path / variant
    main(["train", *TINY_RUN, f"model.name_or_path={tiny_model}", f"train.output_dir={out}", "train.max_steps=3", *VARIANTS[variant]])
    config = yaml.safe_load((out / "config.yaml").read_text())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(m["nonfinite"] == 0 and math.isfinite(m["loss"]) for m in metrics)
    assert any(m["grad_norm"] > 0 for m in metrics)
    assert config["algorithm"]["advantage"] == {"rloo": "rloo", "reinforce_pp": "reinforce_pp", "pkpo_clip_cov": "pkpo"}.get(variant, "grpo")
    if variant.startswith("kl_"):
        assert metrics[-1]["kl/mean"] != 0
    if variant == "dual_clip":
        assert all("clip/dual_frac" in m for m in metrics)
    if variant == "pkpo_clip_cov":
        assert all(0 < m["clip/cov_frac"] <= 0.05 for m in metrics)
    if variant == "dapo":
        # all 24 tokens long, at the budget: the full penalty -1
        assert all(m["reward/overlong_penalty_mean"] == -1 and m["groups/resample_rounds"] == 0 for m in metrics)


def test_set_aside_prompts_are_replaced_by_others_and_the_step_keeps_its_size():
    schedule = PromptSchedule(num_prompts=10, prompts_per_step=4, epochs=1.0, seed=0)
    scheduled = schedule.indices(0)
    unscheduled = [i for i in range(10) if i not in scheduled]
    set_aside = {scheduled[0], scheduled[2], unscheduled[0]}
    indices = schedule.indices(0, set_aside)
    assert indices[:2] == [scheduled[1], scheduled[3]] and len(indices) == 4 == len(set(indices))
    assert not set(indices) & set_aside
    assert indices == schedule.indices(0, set_aside)  # seeded by the step
    # one prompt left: it, then set-aside prompts in schedule order rather than a short step
    assert schedule.indices(0, set(range(10)) - {unscheduled[1]}) == [unscheduled[1], *scheduled[:3]]


def test_set_aside_after_a_step_by_hand():
    config = Config()
    config.data.skip_solved, config.data.skip_unsolved = 2.0, 0.5
    groups = [{"reasons": ["correct", "correct"]}, {"reasons": ["wrong", "no_answer"]}, {"reasons": ["correct", "wrong"]}]
    # at epoch 1.25: prompt 3 is solved (out until 3.25), 4 unsolved (until 1.75), 5 mixed (stays in); of the
    # earlier set-aside prompts, 0 is still out (active) and 1 came back
    after = set_aside_after(config.data, [3, 4, 5], groups, 1.25, active={0}, set_aside={0: 2.0, 1: 1.0})
    assert after == {0: 2.0, 3: 3.25, 4: 1.75}
    config.data.skip_solved = 0.0
    assert set_aside_after(config.data, [3, 4, 5], groups, 1.25, active=set(), set_aside={}) == {4: 1.75}


def test_unsolved_prompts_sit_out_an_epoch(tiny_model, tmp_path):
    # 12 prompts, 4 a step: an epoch is 3 steps. The untrained model solves nothing, so with skip_unsolved=1
    # step 1's prompts return at epoch 1.0 (step 4) while steps 2 and 3's are still out: step 4 trains on
    # step 1's prompts.
    out = tmp_path / "skip"
    main([
        "train", *TINY_RUN, f"model.name_or_path={tiny_model}", f"train.output_dir={out}", "train.max_steps=4",
        "data.num_train=12", "train.epochs=2", "data.skip_unsolved=1", "train.log_groups_per_step=4",
    ])
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    prompts_of = {step: {g["prompt"] for g in samples if g["step"] == step} for step in (1, 2, 3, 4)}
    assert all(m["reward/correct_mean"] == 0 for m in metrics)
    assert len(prompts_of[1] | prompts_of[2] | prompts_of[3]) == 12
    assert prompts_of[4] == prompts_of[1]
    schedule = PromptSchedule(num_prompts=12, prompts_per_step=4, epochs=1.0, seed=0)
    still_out = set(schedule.indices(1)) | set(schedule.indices(2))
    assert [m["data/skipped_frac"] for m in metrics] == [0, 0, 0, len(set(schedule.indices(3)) & still_out) / 4]
    assert metrics[3]["data/skipped_frac"] > 0


def test_harbor_examples_carry_their_level_and_the_curriculum_locks_later_levels():
    from grpo_cli.data.harbor import generate

    config = Config()
    config.data.difficulty, config.data.difficulty_steps = [1, 3], [0, 5]
    config.data.num_train, config.data.num_eval = 60, 10
    train, _, _ = generate(config.data)
    assert {example.level for example in train} == {1, 3}
    level_3 = {i for i, example in enumerate(train) if example.level == 3}
    # level 3 is first drawn at step 5
    assert locked_prompts(train, config.data, 1) == locked_prompts(train, config.data, 4) == level_3
    assert locked_prompts(train, config.data, 5) == set()
    config.data.difficulty_steps = []
    assert locked_prompts(train, config.data, 1) == set()


def test_difficulty_steps_need_one_start_per_harbor_level():
    with pytest.raises(ConfigError, match=r"data.difficulty_steps=\[0, 5\]: needs data.name=harbor and one start"):
        compose([*TINY_RUN, "data.difficulty=[1,2,3]", "data.difficulty_steps=[0,5]"])
    with pytest.raises(ConfigError, match="the first 0"):
        compose([*TINY_RUN, "data.difficulty=[1,2]", "data.difficulty_steps=[3,5]"])


def test_the_first_steps_draw_only_the_unlocked_level(tiny_model, tmp_path):
    out = tmp_path / "curriculum"
    main([
        "train", *TINY_RUN, f"model.name_or_path={tiny_model}", f"train.output_dir={out}", "train.max_steps=2",
        "data.num_train=40", "data.difficulty=[1,2]", "data.difficulty_steps=[0,2]", "train.log_groups_per_step=4",
        "verifier.timeout_s=2",  # level 2's unit conversions can exceed the demo's 0.2 s on a loaded machine
    ])
    config = compose([*TINY_RUN, "data.num_train=40", "data.difficulty=[1,2]"])
    from grpo_cli.data.harbor import generate

    level_of = {example.question: example.level for example in generate(config.data)[0]}
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {level_of[g["prompt"]] for g in samples if g["step"] == 1} == {1}
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    schedule = PromptSchedule(num_prompts=40, prompts_per_step=4, epochs=1.0, seed=0)
    train = generate(config.data)[0]
    assert metrics[0]["data/skipped_frac"] == sum(train[i].level == 2 for i in schedule.indices(0)) / 4
    assert metrics[0]["data/skipped_frac"] > 0 and metrics[1]["data/skipped_frac"] == 0
