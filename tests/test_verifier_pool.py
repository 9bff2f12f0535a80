"""The Verifier end to end: worker processes, timeouts, killed workers, rewards, identity, GSM8K."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import GSM8K_DIR
from grpo_cli.config import RewardConfig, VerifierConfig
from grpo_cli.errors import ConfigError
from grpo_cli.verifier import build_verifier, config_hash
from grpo_cli.verifier.rewards import RewardFunction, compose
from grpo_cli.verifier.score import Check

TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def verifier():
    with build_verifier(VerifierConfig(extract="final_line", timeout_s=TIMEOUT_S, num_workers=2)) as verifier:
        yield verifier


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    """A user reward module on sys.path (the workers inherit sys.path when they start)."""
    (tmp_path / "user_rewards.py").write_text(textwrap.dedent("""
        import os, time

        def worker_pid(completion, answer):
            time.sleep(0.1)  # long enough that both workers take a task
            return float(os.getpid())

        def sleep_for(completion, answer):
            time.sleep(float(completion.split()[0]))
            return 0.0

        def brevity(completion, answer):
            return 1.0 if len(completion) < 20 else 0.0

        def spin(completion, answer):
            while "hang" in completion:  # Python code that never returns: the soft limit (SIGALRM) stops it
                pass
            return 0.0

        def broken(completion, answer):
            raise RuntimeError("bug in the user's reward")

        def torch_threads(completion, answer):
            import torch  # imported in the worker, as a user's reward may
            return float(torch.get_num_threads())

        def mark_checked(completion, answer):
            open(completion.splitlines()[0], "w").close()  # the completion's first line: a path, checked
            return 0.0

        def c_loop(completion, answer):
            # One C call that never returns to the interpreter for minutes, as GMP's integer power does when
            # sympy runs on gmpy2: SIGALRM cannot stop it (CPython's own big-int code checks for signals).
            return float(sum(range(10 ** 12)) % 2) if "slow" in completion else 0.0
    """))
    monkeypatch.syspath_prepend(str(tmp_path))


def test_scores_come_back_in_input_order(verifier):
    completions = [f"work\nFINAL: {i}" for i in range(40)]
    answers = [str(i if i % 3 else i + 1) for i in range(40)]
    scores = verifier.score(completions, answers)
    assert [s.correct for s in scores] == [i % 3 != 0 for i in range(40)]
    assert [s.extracted for s in scores] == [str(i) for i in range(40)]
    assert verifier.score([], []) == []


def test_a_check_that_hangs_times_out_and_the_next_thousand_checks_succeed(reward_module):
    config = VerifierConfig(extract="final_line", timeout_s=TIMEOUT_S, num_workers=2, rewards=RewardConfig(custom="user_rewards:spin"))
    with build_verifier(config) as verifier:
        start = time.perf_counter()
        [score] = verifier.score(["hang\nFINAL: 2"], ["2"])
        assert time.perf_counter() - start < 2 * TIMEOUT_S
        assert (score.reward, score.reason) == (0.0, "timeout")
        scores = verifier.score([f"FINAL: {i}" for i in range(1000)], [str(i) for i in range(1000)])
        assert all(s.reason == "correct" for s in scores)


def test_a_power_tower_is_not_evaluated(verifier):
    start = time.perf_counter()
    [score] = verifier.score([r"FINAL: 7^{7^{7^{7}}}"], ["2"])  # evalf would grind through a 10^(10^5)-digit power
    assert time.perf_counter() - start < TIMEOUT_S
    assert (score.reward, score.reason) == (0.0, "wrong")


@pytest.mark.parametrize("completion", ["FINAL: 2^2^2^2^2^2^2", "FINAL: 10**10**10", "FINAL: 9^9^9^9", r"\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}"])
def test_power_towers_and_deep_nesting_return_zero_without_hanging(verifier, completion):
    start = time.perf_counter()
    [score] = verifier.score([completion], ["2"])
    assert time.perf_counter() - start < 2 * TIMEOUT_S
    assert score.reward == 0.0 and score.reason in ("wrong", "timeout", "no_answer")


def test_c_level_arithmetic_is_stopped_by_killing_the_worker(reward_module):
    config = VerifierConfig(extract="final_line", timeout_s=TIMEOUT_S, num_workers=1, rewards=RewardConfig(custom="user_rewards:c_loop"))
    with build_verifier(config) as verifier:
        [before] = verifier.worker_pids
        start = time.perf_counter()
        [score] = verifier.score(["slow\nFINAL: 1"], ["1"])
        assert time.perf_counter() - start < 2 * TIMEOUT_S
        assert (score.reward, score.reason) == (0.0, "timeout")
        assert verifier.worker_pids != [before]
        assert [s.reason for s in verifier.score(["FINAL: 1"] * 20, ["1"] * 20)] == ["correct"] * 20


def test_the_pool_survives_a_worker_killed_from_outside(verifier):
    victim = verifier.worker_pids[0]
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.1)
    scores = verifier.score([f"FINAL: {i}" for i in range(50)], [str(i) for i in range(50)])
    assert all(s.correct for s in scores)
    assert victim not in verifier.worker_pids


def test_each_completion_s_latency_is_measured(reward_module):
    config = VerifierConfig(extract="final_line", timeout_s=1.0, num_workers=2, rewards=RewardConfig(custom="user_rewards:sleep_for"))
    with build_verifier(config) as verifier:
        verifier.score(["0.3\nFINAL: 1", "0\nFINAL: 1", "0.1\nFINAL: 1", "0\nFINAL: 1"], ["1"] * 4)
        latencies = verifier.latencies_s
        assert latencies[0] == pytest.approx(0.3, abs=0.08) and latencies[2] == pytest.approx(0.1, abs=0.08)
        assert max(latencies[1], latencies[3]) < 0.08
        # A check stopped at timeout_s counts the time until it was stopped.
        [score] = verifier.score(["10\nFINAL: 1"], ["1"])
        assert score.reason == "timeout" and verifier.latencies_s == [pytest.approx(1.0, abs=0.1)]


def test_checks_run_in_parallel_on_every_worker(reward_module):
    config = VerifierConfig(extract="final_line", num_workers=2, rewards=RewardConfig(custom="user_rewards:worker_pid"))
    with build_verifier(config) as verifier:
        scores = verifier.score(["FINAL: 1"] * 4, ["1"] * 4)
        assert {s.components["custom"] for s in scores} == set(map(float, verifier.worker_pids))


def test_custom_reward_is_weighted_and_a_raising_one_scores_zero_with_reason_error(reward_module):
    rewards = RewardConfig(custom="user_rewards:brevity", custom_weight=0.5)
    with build_verifier(VerifierConfig(extract="final_line", rewards=rewards)) as verifier:
        short, long = verifier.score(["FINAL: 3", "a long way round\nFINAL: 3"], ["3", "3"])
    assert (short.reward, short.components["custom"]) == (1.5, 0.5)
    assert (long.reward, long.components["custom"]) == (1.0, 0.0)
    with build_verifier(VerifierConfig(extract="final_line", rewards=RewardConfig(custom="user_rewards:broken"))) as verifier:
        [score] = verifier.score(["FINAL: 3"], ["3"])
    assert (score.reward, score.correct, score.reason) == (0.0, False, "error")


@pytest.mark.parametrize(
    ("path", "message"),
    [("user_rewards", "expected package.module:function"), ("no_such_module:f", "cannot import no_such_module"), ("user_rewards:missing", "user_rewards has no function missing")],
)
def test_a_custom_reward_that_does_not_resolve_is_a_config_error(reward_module, path, message):
    with pytest.raises(ConfigError, match=f"verifier.rewards.custom='{path}': {message}"):
        build_verifier(VerifierConfig(rewards=RewardConfig(custom=path)))


def test_format_bonus_anneals_linearly_to_zero():
    rewards = RewardConfig(format_bonus=0.1, format_anneal_steps=100)
    well_formed = Check(1.0, "correct", "7", well_formed=True)
    bonuses = [compose(well_formed, "FINAL: 7", "7", step, rewards, []).components["format"] for step in (0, 25, 50, 100, 150)]
    assert bonuses == pytest.approx([0.1, 0.075, 0.05, 0.0, 0.0])
    assert compose(Check(1.0, "correct", "7", well_formed=False), "7", "7", 0, rewards, []).components["format"] == 0.0
    assert compose(well_formed, "FINAL: 7", "7", 10_000, RewardConfig(format_bonus=0.1), []).components["format"] == 0.1


def test_reward_is_the_sum_of_weighted_components():
    rewards = RewardConfig(correctness_weight=2.0, format_bonus=0.1, length_penalty=0.2)
    one = RewardFunction("one", "rewards:one", "verifier.rewards.custom='rewards:one'", 1.0, False, lambda c, a: 1.0)
    score = compose(Check(1.0, "correct", "7", well_formed=True), "x" * 500, "7", 0, rewards, [one])
    assert score.components == pytest.approx({"correctness": 2.0, "format": 0.1, "length": -0.1, "custom": 1.0})
    assert score.reward == pytest.approx(3.0)


def test_the_step_reaches_the_format_anneal_through_the_pool():
    config = VerifierConfig(extract="final_line", rewards=RewardConfig(format_bonus=0.2, format_anneal_steps=10))
    with build_verifier(config) as verifier:
        early, late = verifier.score(["FINAL: 4"], ["4"], step=0)[0], verifier.score(["FINAL: 4"], ["4"], step=5)[0]
    assert (early.reward, late.reward) == pytest.approx((1.2, 1.1))


def test_version_and_config_hash_identify_what_scored_a_run(verifier):
    base = VerifierConfig(extract="final_line", timeout_s=TIMEOUT_S, num_workers=2)
    assert verifier.config_hash == config_hash(base)
    assert len(verifier.config_hash) == 12
    assert config_hash(dataclasses.replace(base, num_workers=7)) == config_hash(base)  # cannot change a score
    for change in ({"extract": "auto"}, {"rel_tol": 1e-4}, {"timeout_s": 1.0}, {"rewards": RewardConfig(format_bonus=0.1)}):
        assert config_hash(dataclasses.replace(base, **change)) != config_hash(base)
    assert verifier.version.startswith("math-v3 math-verify-0.")


@pytest.mark.parametrize("extract", ["gsm8k", "auto"])
def test_each_gsm8k_reference_solution_scores_one_against_its_answer_and_zero_against_the_next_integer(extract, gsm8k):
    rows = [json.loads(line) for line in (GSM8K_DIR / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 1319
    solutions = [row["answer"] for row in rows]
    answers = [row["answer"].rsplit("####", 1)[1].strip().replace(",", "") for row in rows]
    with build_verifier(VerifierConfig(extract=extract, timeout_s=1.0, num_workers=2)) as verifier:
        right = verifier.score(solutions, answers)
        off_by_one = verifier.score(solutions, [str(int(a) + 1) for a in answers])
    assert [s.reward for s in right] == [1.0] * 1319
    assert [s.reward for s in off_by_one] == [0.0] * 1319


def test_verifier_workers_run_one_torch_thread(reward_module, tmp_path):
    """The workers are mostly idle and must not take cores from the sampler and the learner. In a fresh
    interpreter without OMP_NUM_THREADS (conftest sets it for the tests), where torch would take every core."""
    script = textwrap.dedent("""
        from grpo_cli.config import RewardConfig, VerifierConfig
        from grpo_cli.verifier import build_verifier

        if __name__ == "__main__":
            # timeout_s: the first check imports torch
            config = VerifierConfig(extract="final_line", timeout_s=60, num_workers=2, rewards=RewardConfig(custom="user_rewards:torch_threads"))
            with build_verifier(config) as verifier:
                print(sorted({s.components["custom"] for s in verifier.score(["FINAL: 1"] * 2, ["1"] * 2)}))
    """)
    (tmp_path / "threads.py").write_text(script)
    env = {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    result = subprocess.run([sys.executable, str(tmp_path / "threads.py")], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[1.0]", result.stderr


class CharTokenizer:
    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [1] + [2 + ord(c) % 50 for c in text]}


class BatchedSampler:
    """Two groups per batch; after handing over its first batch it waits until the verifier has checked it
    (a synchronous verifier never would), so the step only finishes when verification overlaps generation."""

    def __init__(self, groups, markers):
        self.groups, self.markers, self.waited = groups, markers, False

    def generate(self, prompt_ids, n, seed, temperature=None, on_groups=None):
        for start in range(0, len(self.groups), 2):
            on_groups(self.groups[start : start + 2])
            if start == 0:
                deadline = time.monotonic() + 30
                while not all(path.exists() for path in self.markers[: 2 * n]) and time.monotonic() < deadline:
                    time.sleep(0.01)
                self.waited = all(path.exists() for path in self.markers[: 2 * n])
        return self.groups


def test_finished_groups_are_verified_while_generation_goes_on(reward_module, tmp_path):
    from grpo_cli.config import Config
    from grpo_cli.data import Example
    from grpo_cli.sampler.base import Completion
    from grpo_cli.training.rollout import collect_rollouts

    config = Config()
    config.algorithm.group_size = 2
    examples = [Example(f"q{i}", f"question {i}", str(i)) for i in range(6)]
    markers = [tmp_path / f"checked{i}" for i in range(12)]
    # completion j of prompt i answers i when j == 0 or i is even: rewards 1 0, 1 1, 1 0, ...
    groups = [
        [Completion([5], [-1.0], f"{markers[2 * i + j]}\nFINAL: {i if j == 0 or i % 2 == 0 else i + 1}", "stop") for j in range(2)]
        for i in range(6)
    ]
    sampler = BatchedSampler(groups, markers)
    verifier_config = VerifierConfig(extract="final_line", num_workers=2, rewards=RewardConfig(custom="user_rewards:mark_checked"))
    with build_verifier(verifier_config) as verifier:
        rollouts = collect_rollouts(config, 1, examples, CharTokenizer(), sampler, verifier)
        assert sampler.waited
        expected = verifier.score([c.text for g in groups for c in g], [ex.answer for ex in examples for _ in range(2)])
    assert [s.reward for s in rollouts.scores] == [1.0, 1.0, 1.0, 0.0] * 3
    assert rollouts.scores == expected  # the same scores as one synchronous call
    assert len(rollouts.latencies_ms) == 12 and (rollouts.latencies_ms > 0).all()
