"""Run health warnings fire on the failure patterns they name, and stay quiet on a healthy run."""

from grpo_cli.monitoring.monitor import RunMonitor


def step_metrics(**overrides):
    metrics = {
        "reward/correct_mean": 0.4,
        "groups/zero_variance_frac": 0.2,
        "groups/any_positive_frac": 0.7,
        "completions/truncated_frac": 0.0,
        "completions/max_new_tokens": 64,
        "verifier/parse_failure_frac": 0.1,
        "kl/mean": 0.01,
    }
    metrics.update(overrides)
    return metrics


def test_healthy_run_is_quiet():
    monitor = RunMonitor(kl_coef=0.04)
    for step in range(1, 20):
        assert monitor.after_step(step, step_metrics(**{"kl/mean": 0.01 + step * 1e-4})) == []


def test_zero_variance_warns_once_after_three_steps_in_a_row():
    monitor = RunMonitor(kl_coef=0.0)
    fired = [monitor.after_step(s, step_metrics(**{"groups/zero_variance_frac": 0.75})) for s in range(1, 6)]
    assert [len(w) for w in fired] == [0, 0, 1, 0, 0]
    assert "75% of groups had identical rewards" in fired[2][0]
    assert "sampler.temperature" in fired[2][0]


def test_few_positive_groups_early_suggests_the_fix():
    monitor = RunMonitor(kl_coef=0.0)
    fired = [monitor.after_step(s, step_metrics(**{"groups/any_positive_frac": 0.2})) for s in range(1, 7)]
    assert [len(w) for w in fired] == [0, 0, 0, 0, 1, 0]
    assert "only 20% of groups had a positive reward" in fired[4][0]
    assert "curriculum" in fired[4][0]


def test_kl_spike_and_collapse():
    monitor = RunMonitor(kl_coef=0.04)
    for step in range(1, 6):
        assert monitor.after_step(step, step_metrics(**{"kl/mean": 0.01})) == []
    (spike,) = monitor.after_step(6, step_metrics(**{"kl/mean": 0.5}))
    assert "spiked to 0.5 (50x" in spike

    collapsed = RunMonitor(kl_coef=0.04)
    fired = [collapsed.after_step(s, step_metrics(**{"kl/mean": 0.0})) for s in range(1, 6)]
    # Step 1 starts at the reference (KL 0 is expected); steps 2, 3, 4 make the streak.
    assert [len(w) for w in fired] == [0, 0, 0, 1, 0]
    assert "KL to the reference has been 0" in fired[3][0]


def test_kl_is_not_watched_without_a_kl_penalty():
    monitor = RunMonitor(kl_coef=0.0)
    assert all(monitor.after_step(s, step_metrics(**{"kl/mean": 0.0})) == [] for s in range(1, 6))


def test_truncation_warning_names_the_limit():
    (warning,) = RunMonitor(kl_coef=0.0).after_step(1, step_metrics(**{"completions/truncated_frac": 0.25}))
    assert "25% of completions hit sampler.max_new_tokens=64" in warning


def test_pass_at_g_rising_while_pass_at_1_flat():
    monitor = RunMonitor(kl_coef=0.0)
    assert monitor.after_eval({"pass@1": 0.30, "pass@12": 0.60}, [1, 12]) == []
    (warning,) = monitor.after_eval({"pass@1": 0.305, "pass@12": 0.70}, [1, 12])
    assert "pass@12 rose +10.0%" in warning and "pass@1 moved +0.5%" in warning
    assert RunMonitor(kl_coef=0.0).after_eval({"pass@1": 0.3, "pass@12": 0.6}, [1, 12]) == []


def test_reward_up_while_eval_down_flags_verifier_hacking():
    monitor = RunMonitor(kl_coef=0.0)
    monitor.after_step(1, step_metrics(**{"reward/correct_mean": 0.3}))
    monitor.after_eval({"pass@1": 0.40, "pass@12": 0.7}, [1, 12])
    monitor.after_step(2, step_metrics(**{"reward/correct_mean": 0.6}))
    (warning,) = monitor.after_eval({"pass@1": 0.35, "pass@12": 0.7}, [1, 12])
    assert "exploiting the verifier" in warning


def test_a_step_of_unreadable_answers_names_the_extraction_settings():
    monitor = RunMonitor(kl_coef=0.0)
    (warning,) = monitor.after_step(1, step_metrics(**{"reward/correct_mean": 0.0, "verifier/parse_failure_frac": 0.75}))
    assert "found no answer in 75% of them" in warning
    assert "verifier.extract" in warning and "verifier.marker" in warning
    # Half or fewer unreadable, or any completion correct: the task may just be hard.
    assert monitor.after_step(2, step_metrics(**{"reward/correct_mean": 0.0, "verifier/parse_failure_frac": 0.5})) == []
    assert monitor.after_step(3, step_metrics(**{"reward/correct_mean": 0.0625, "verifier/parse_failure_frac": 0.9})) == []


def test_step_one_logprob_mismatch_warns_with_the_likely_causes():
    monitor = RunMonitor(kl_coef=0.0, max_initial_mismatch=0.05)
    (warning,) = monitor.after_step(1, step_metrics(**{"logprob_mismatch/mean": 0.3}))
    assert "0.3 nats per token (> train.max_initial_mismatch=0.05)" in warning
    for cause in ("model.dtype", "chat template", "weights not synced", "top_p/top_k"):
        assert cause in warning
    # Numerics alone stay quiet; after the first update the policy moved, so later steps are not checked.
    assert RunMonitor(kl_coef=0.0).after_step(1, step_metrics(**{"logprob_mismatch/mean": 0.01})) == []
    assert monitor.after_step(2, step_metrics(**{"logprob_mismatch/mean": 0.3})) == []


def test_history_restored_from_state_dict_warns_as_an_uninterrupted_run():
    zero_variance = step_metrics(**{"groups/zero_variance_frac": 0.75})
    straight = RunMonitor(kl_coef=0.0)
    fired = [straight.after_step(s, zero_variance) for s in (1, 2, 3)]
    interrupted = RunMonitor(kl_coef=0.0)
    interrupted.after_step(1, zero_variance)
    interrupted.after_step(2, zero_variance)
    resumed = RunMonitor(kl_coef=0.0)
    resumed.load_state_dict(interrupted.state_dict())
    assert resumed.after_step(3, zero_variance) == fired[2] != []
    assert resumed.state_dict() == straight.state_dict()
    assert "kl_coef" not in resumed.state_dict()
