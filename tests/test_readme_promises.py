"""What the README promises and no other test covered: verifier timeouts and no-answer scoring, recipe
folders, algorithm presets, commands without a configuration, the warnings' exact conditions, metrics.jsonl
on steps with nothing to learn, best-checkpoint selection, export's default, and the verifier benchmark."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import GRPO, REPO, TINY_RUN
from grpo_cli.cli import main
from grpo_cli.compose import available_recipes, compose
from grpo_cli.config import RewardConfig, VerifierConfig
from grpo_cli.monitoring.monitor import RunMonitor
from grpo_cli.training import checkpoint, trainer
from grpo_cli.training.trainer import train
from grpo_cli.verifier import build_verifier

TIMEOUT_S = 1.0
HARD_LIMIT_S = 1.5 * TIMEOUT_S
CODE_ANSWER = json.dumps({"tests": ["assert True"]})


@pytest.fixture
def rewards_module(tmp_path, monkeypatch):
    """User reward functions on sys.path (workers receive the parent's sys.path when they start)."""
    (tmp_path / "promise_rewards.py").write_text(textwrap.dedent("""
        import os

        def brevity(completion, answer):
            return 1.0 if len(completion) < 20 else 0.0

        def python_loop(completion, answer):
            while "hang" in completion:  # Python code: SIGALRM can interrupt it
                pass
            return 0.0

        def raises(completion, answer):
            raise RuntimeError("bug in the user's reward")

        def dies(completion, answer):
            os._exit(3)

        def not_a_number(completion, answer):
            return float(completion.split()[-1])

        def parity(completion, answer):
            # Groups whose answer is even get rewards that differ; groups whose answer is odd all tie at 0.
            return float(len(completion) % 2) if int(answer) % 2 == 0 else 0.0
    """))
    monkeypatch.syspath_prepend(str(tmp_path))


def custom_verifier(function: str, **config):
    return build_verifier(VerifierConfig(extract="final_line", timeout_s=TIMEOUT_S, num_workers=1,
                                         rewards=RewardConfig(custom=f"promise_rewards:{function}"), **config))


def timed_score(verifier, completion: str, answer: str):
    start = time.perf_counter()
    [score] = verifier.score([completion], [answer])
    return score, time.perf_counter() - start


# --- Verifier timeouts: soft limit, hard limit, exceptions, dead workers ---------------------------------------


def test_a_python_level_hang_gets_the_soft_limit_and_the_worker_carries_on(rewards_module):
    with custom_verifier("python_loop") as verifier:
        [worker] = verifier.worker_pids
        score, seconds = timed_score(verifier, "hang\nFINAL: 1", "1")
        assert (score.reward, score.reason) == (0.0, "timeout")
        assert TIMEOUT_S <= seconds < HARD_LIMIT_S
        assert verifier.worker_pids == [worker]
        assert verifier.score(["FINAL: 1"], ["1"])[0].reason == "correct"


def test_the_code_verifier_has_no_soft_limit_the_worker_is_replaced_at_one_and_a_half_timeouts(rewards_module):
    with custom_verifier("python_loop", name="code") as verifier:
        [worker] = verifier.worker_pids
        score, seconds = timed_score(verifier, "hang: no program", CODE_ANSWER)
        assert (score.reward, score.reason) == (0.0, "timeout")
        assert seconds >= HARD_LIMIT_S
        assert verifier.worker_pids != [worker]


def test_an_exception_scores_error_and_the_worker_is_not_replaced(rewards_module):
    with custom_verifier("raises") as verifier:
        [worker] = verifier.worker_pids
        [score] = verifier.score(["FINAL: 1"], ["1"])
        assert (score.reward, score.correct, score.reason) == (0.0, False, "error")
        assert verifier.worker_pids == [worker]


def test_a_worker_that_dies_scores_error_and_is_replaced(rewards_module):
    with custom_verifier("dies") as verifier:
        [worker] = verifier.worker_pids
        assert [(s.reward, s.reason) for s in verifier.score(["FINAL: 1"] * 3, ["1"] * 3)] == [(0.0, "error")] * 3
        assert worker not in verifier.worker_pids


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_custom_reward_returning_a_non_finite_number_scores_error(rewards_module, value):
    with custom_verifier("not_a_number") as verifier:
        [score] = verifier.score([f"FINAL: 1\n{value}"], ["1"])
        [finite] = verifier.score(["FINAL: 1\n0.25"], ["1"])
    assert (score.reward, score.correct, score.reason) == (0.0, False, "error")
    assert (finite.reward, finite.reason) == (1.25, "correct")


# --- A completion with no answer ---------------------------------------------------------------------------


def test_no_answer_scores_zero_for_correctness_and_format_but_length_and_custom_rewards_apply(rewards_module):
    rewards = RewardConfig(format_bonus=0.1, length_penalty=0.2, custom="promise_rewards:brevity", custom_weight=0.5)
    with build_verifier(VerifierConfig(extract="final_line", rewards=rewards, num_workers=1)) as verifier:
        silent, empty_marker, answered = verifier.score(["no marker here", "FINAL:", "FINAL: 3"], ["3", "3", "3"])
    assert (silent.reason, silent.correct, silent.extracted) == ("no_answer", False, None)
    assert silent.components == pytest.approx({"correctness": 0.0, "format": 0.0, "length": -0.2 * 14 / 1000, "custom": 0.5})
    assert silent.reward == pytest.approx(0.5 - 0.0028)
    assert empty_marker.reason == "no_answer"
    assert empty_marker.components["format"] == 0.0
    assert answered.reward == pytest.approx(1.0 + 0.1 - 0.2 * 8 / 1000 + 0.5)


def test_not_answering_does_not_dodge_the_length_penalty():
    rewards = RewardConfig(length_penalty=1.0)
    with build_verifier(VerifierConfig(extract="final_line", rewards=rewards, num_workers=1)) as verifier:
        silent, wrong = verifier.score(["x" * 500, "x" * 491 + "\nFINAL: 4"], ["3", "3"])
    assert (silent.reason, wrong.reason) == ("no_answer", "wrong")
    assert silent.reward == pytest.approx(wrong.reward) == pytest.approx(-0.5)


# --- Recipes and configuration -----------------------------------------------------------------------------


def write_recipe(folder, name: str, description: str, group_size: int):
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(
        f"# @package _global_\ndescription: {description}\nalgorithm:\n  group_size: {group_size}\n"
    )


def test_a_user_recipe_shadows_the_built_in_one_of_the_same_name(tmp_path):
    write_recipe(tmp_path, "demo", "my demo", 5)
    cfg = compose(["recipe=demo"], [str(tmp_path)])
    assert cfg.algorithm.group_size == 5
    assert compose(["recipe=demo"]).model.name_or_path == "runs/demo/sft"
    assert cfg.model.name_or_path == compose([]).model.name_or_path  # none of the built-in demo applies
    listed = subprocess.run([GRPO, "--recipes-dir", str(tmp_path), "recipes"], capture_output=True, text=True, cwd=REPO)
    demo_lines = [line for line in listed.stdout.splitlines() if line.split()[0] == "demo"]
    assert demo_lines == [f"{'demo':<16} my demo"]


def test_several_recipe_folders_first_listed_wins_flags_before_the_environment(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    write_recipe(first, "mine", "first", 3)
    write_recipe(second, "mine", "second", 4)
    write_recipe(second, "theirs", "only in second", 6)
    both = [str(first), str(second)]
    assert compose(["recipe=mine"], both).algorithm.group_size == 3
    assert compose(["recipe=mine"], both[::-1]).algorithm.group_size == 4
    assert compose(["recipe=theirs"], both).algorithm.group_size == 6

    monkeypatch.setenv("GRPO_RECIPES_PATH", os.pathsep.join(both[::-1]))
    assert compose(["recipe=mine"]).algorithm.group_size == 4
    assert compose(["recipe=mine"], [str(first)]).algorithm.group_size == 3  # --recipes-dir before the variable
    assert {"mine", "theirs", "demo", "gsm8k", "harbor_math"} <= set(available_recipes())


def yaml_values(path) -> dict:
    return {key: value for key, value in yaml.safe_load(path.read_text()).items() if key != "defaults"}


@pytest.mark.parametrize("preset", ["dr_grpo", "dapo", "gspo"])
def test_algorithm_presets_are_grpo_plus_their_switches_then_the_recipe_then_overrides(preset):
    switches = yaml_values(REPO / "conf" / "algorithm" / f"{preset}.yaml")
    grpo = vars(compose(["algorithm=grpo"]).algorithm)
    assert grpo | switches != grpo  # the preset changes something, so the comparisons below can fail
    assert vars(compose([f"algorithm={preset}"]).algorithm) == grpo | switches

    # Last wins: a recipe's algorithm values beat the preset's, overrides beat both.
    recipe = yaml_values(REPO / "recipes" / "harbor_math.yaml")["algorithm"]
    assert vars(compose(["recipe=harbor_math", f"algorithm={preset}"]).algorithm) == grpo | switches | recipe
    overridden = compose(["recipe=harbor_math", f"algorithm={preset}", "algorithm.loss_agg=seq_sum_norm"]).algorithm
    assert overridden.loss_agg == "seq_sum_norm"


@pytest.mark.parametrize(
    "command", [["export", "RUN", "--out", "DIR"], ["merge", "A", "B", "--weight", "0.5", "--out", "DIR"], ["recipes"]]
)
def test_export_merge_and_recipes_take_no_configuration(command):
    result = subprocess.run([GRPO, *command, "recipe=demo"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert "unrecognized arguments: recipe=demo" in result.stderr


def test_a_bad_value_is_reported_before_torch_is_imported_or_the_model_loaded(tmp_path):
    program = textwrap.dedent(f"""
        import sys
        from grpo_cli.cli import main
        try:
            main(["train", "model.name_or_path={tmp_path / 'no_such_model'}", "algorithm.group_size=1"])
        finally:
            print("torch imported:", "torch" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert result.stdout == "torch imported: False\n"
    assert result.stderr.strip().splitlines() == [
        "error: algorithm.group_size=1: G must be >= 2: advantages compare completions within a group"
    ]


# --- Warnings: exactly when they fire ----------------------------------------------------------------------


def step_metrics(step_kl=None, correct=0.4):
    metrics = {"reward/correct_mean": correct, "groups/zero_variance_frac": 0.0, "groups/any_positive_frac": 1.0,
               "completions/truncated_frac": 0.0, "completions/max_new_tokens": 64}
    return metrics if step_kl is None else metrics | {"kl/mean": step_kl}


def kl_warnings(kls: list[float | None], kl_coef: float = 0.04) -> list[list[str]]:
    monitor = RunMonitor(kl_coef=kl_coef)
    return [monitor.after_step(step, step_metrics(kl)) for step, kl in enumerate(kls, start=1)]


def test_kl_spike_needs_kl_above_001_and_three_earlier_values():
    quiet = 0.0005
    assert kl_warnings([quiet, quiet, 0.5])[-1] == []  # only two earlier values
    assert len(kl_warnings([quiet, quiet, quiet, 0.5])[-1]) == 1
    assert kl_warnings([quiet, quiet, quiet, 0.0099])[-1] == []  # 20x the median, but not above 0.01
    assert len(kl_warnings([quiet, quiet, quiet, 0.0101])[-1]) == 1
    assert kl_warnings([quiet, quiet, quiet, 0.5], kl_coef=0.0)[-1] == []  # no KL penalty: not watched


def test_kl_collapse_means_below_1e9_for_three_steps_after_the_first():
    assert [len(w) for w in kl_warnings([0.0, 9e-10, 9e-10, 9e-10])] == [0, 0, 0, 1]
    assert [len(w) for w in kl_warnings([0.0, 2e-9, 2e-9, 2e-9, 2e-9])] == [0] * 5
    assert [len(w) for w in kl_warnings([0.0, 0.0, 0.0, 0.0], kl_coef=0.0)] == [0] * 4
    # A step with no update (KL null) neither breaks the monitor nor counts.
    assert [len(w) for w in kl_warnings([0.0, 0.0, None, 0.0, 0.0])] == [0, 0, 0, 0, 1]


def test_pass_at_g_warning_watches_the_largest_eval_pass_at():
    monitor = RunMonitor(kl_coef=0.0)
    monitor.after_eval({"pass@1": 0.3, "pass@2": 0.4, "pass@4": 0.5}, [1, 2, 4])
    (warning,) = monitor.after_eval({"pass@1": 0.3, "pass@2": 0.4, "pass@4": 0.55}, [1, 2, 4])
    assert warning.startswith("eval pass@4 rose +5.0%")
    monitor = RunMonitor(kl_coef=0.0)
    monitor.after_eval({"pass@1": 0.3, "pass@2": 0.4, "pass@4": 0.5}, [1, 2, 4])
    assert monitor.after_eval({"pass@1": 0.3, "pass@2": 0.6, "pass@4": 0.54}, [1, 2, 4]) == []  # pass@2 is not watched


def test_verifier_hacking_watches_the_fraction_correct_not_the_reward():
    def run(first_correct, last_correct):
        monitor = RunMonitor(kl_coef=0.0)
        monitor.after_step(1, step_metrics(correct=first_correct) | {"reward/mean": 0.0})
        monitor.after_eval({"pass@1": 0.5}, [1])
        monitor.after_step(2, step_metrics(correct=last_correct) | {"reward/mean": 5.0})
        return monitor.after_eval({"pass@1": 0.4}, [1])

    assert run(0.30, 0.39) == []  # the reward rose by 5, the fraction correct by less than 0.1
    assert "training reward rose +0.10" in run(0.30, 0.40)[0]


# --- Training runs -----------------------------------------------------------------------------------------


def run_config(tiny_model, out, *overrides):
    return compose([*TINY_RUN, f"model.name_or_path={tiny_model}", f"train.output_dir={out}", *overrides])


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


BATCH_METRICS = ["loss", "grad_norm", "clip/low_frac", "clip/high_frac", "ratio/mean", "ratio/min", "ratio/max",
                 "advantage/mean", "advantage/std", "entropy/mean", "logprob_mismatch/mean", "logprob_mismatch/max",
                 "kl/mean", "tis/weight_mean"]


def test_a_step_whose_groups_all_tie_writes_every_key_with_null_batch_metrics(tiny_model, tmp_path):
    switches = ["train.max_steps=2", "algorithm.kl_coef=0.04", "algorithm.tis_cap=2.0"]
    learning = tmp_path / "learning"
    train(run_config(tiny_model, learning, *switches))
    skipping = tmp_path / "skipping"
    # Every reward is 0, so every group ties and the zero-variance filter drops them all.
    train(run_config(tiny_model, skipping, *switches, "algorithm.filter_zero_variance=true",
                     "verifier.rewards.correctness_weight=0", "verifier.rewards.length_penalty=0"))

    learned, skipped = read_jsonl(learning / "metrics.jsonl"), read_jsonl(skipping / "metrics.jsonl")
    assert [set(m) for m in skipped] == [set(m) for m in learned]
    for m in skipped:
        assert (m["groups/zero_variance_frac"], m["groups/kept_frac"], m["learn/skipped"]) == (1.0, 0.0, 1.0)
        assert {key: m[key] for key in BATCH_METRICS} == dict.fromkeys(BATCH_METRICS)
        assert (m["lr"], m["nonfinite"]) == (1e-3, 0.0)
    for m in learned:
        assert m["learn/skipped"] == 0.0
        assert all(isinstance(m[key], float) for key in BATCH_METRICS)
    saved = load_file(checkpoint.read_pointer(skipping / "checkpoints", "last") / "model.safetensors")
    initial = load_file(tiny_model / "model.safetensors")
    assert all(torch.equal(saved[name], initial[name]) for name in initial)  # no update happened


def test_zero_variance_filter_keeps_only_groups_whose_rewards_differ(tiny_model, tmp_path, rewards_module):
    out = tmp_path / "run"
    train(run_config(tiny_model, out, "train.max_steps=3", "algorithm.filter_zero_variance=true",
                     "verifier.rewards.correctness_weight=0", "verifier.rewards.length_penalty=0",
                     "verifier.rewards.custom=promise_rewards:parity", "train.log_groups_per_step=4"))
    metrics, groups = read_jsonl(out / "metrics.jsonl"), read_jsonl(out / "samples.jsonl")
    for m in metrics:
        rewards = [g["rewards"] for g in groups if g["step"] == m["step"]]
        assert len(rewards) == 4  # every group of the step
        assert m["groups/kept_frac"] == sum(len(set(r)) > 1 for r in rewards) / 4
        assert m["groups/kept_frac"] == 1 - m["groups/zero_variance_frac"]
        assert m["learn/skipped"] == float(m["groups/kept_frac"] == 0)
    assert any(0 < m["groups/kept_frac"] < 1 and m["loss"] is not None for m in metrics)


def test_best_checkpoint_follows_select_pass_at_1_and_export_defaults_to_it(tiny_model, tmp_path, monkeypatch):
    # Select-split pass@1 scripted per eval (steps 1, 2, 3): step 2 is best; step 3 ties it later.
    pass_at_1 = iter([0.2, 0.6, 0.6])
    real_evaluate = trainer.evaluate

    def scripted_evaluate(sampler, tokenizer, examples, *args, **kwargs):
        results = real_evaluate(sampler, tokenizer, examples, *args, **kwargs)
        if examples[0].id.startswith("harbor-select"):
            value = next(pass_at_1)
            results |= {"pass@1": value, "pass@2": value}
        return results

    monkeypatch.setattr("grpo_cli.training.trainer.evaluate", scripted_evaluate)
    out = tmp_path / "run"
    summary = train(run_config(tiny_model, out, "train.max_steps=3", "train.eval_every=1"))
    assert (summary["best_step"], summary["select/pass@1_best"]) == (2, 0.6)
    assert checkpoint.read_pointer(out / "checkpoints", "best").name == "step_000002"
    assert checkpoint.read_pointer(out / "checkpoints", "last").name == "step_000003"
    # kl/mean is logged only with a KL penalty (the demo recipe has none).
    assert all("kl/mean" not in m for m in read_jsonl(out / "metrics.jsonl"))

    main(["export", str(out), "--out", str(tmp_path / "exported")])
    exported = load_file(tmp_path / "exported" / "model.safetensors")
    best = load_file(out / "checkpoints" / "step_000002" / "model.safetensors")
    last = load_file(out / "checkpoints" / "step_000003" / "model.safetensors")
    assert all(torch.equal(exported[name], best[name]) for name in best)
    assert any(not torch.equal(exported[name], last[name]) for name in last)


# --- Benchmark script ------------------------------------------------------------------------------------


def test_bench_verifier_runs_in_its_short_mode():
    result = subprocess.run([sys.executable, "scripts/bench_verifier.py", "--checks", "128"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert sum("checks/s  (128 checks" in line for line in lines) == 8  # numeric twice, LaTeX, mixed x 1 and 2 workers
    assert sum(line.startswith("latency ") and "128 checks alone" in line for line in lines) == 1  # labelled
    assert sum("(128 checks, 50.0% correct)" in line and line.startswith("numeric") for line in lines) == 4
    assert sum("2 workers / target 2000" in line for line in lines) == 2
    assert any(line.startswith("LaTeX") and "2 workers / target 500" in line for line in lines)
