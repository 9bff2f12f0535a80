"""Configuration: composition, overrides and the one-line errors users see (exit status 2)."""

import subprocess
import sys

import pytest
import yaml

from conftest import GRPO, REPO
from grpo_cli.compose import compose
from grpo_cli.errors import ConfigError


def grpo(*args, cwd=REPO, env=None):
    return subprocess.run([GRPO, *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_harbor_math_has_the_reference_values():
    result = grpo("config", "recipe=harbor_math")
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["algorithm"]["group_size"] == 12
    assert cfg["sampler"]["temperature"] == 0.9
    assert cfg["sampler"]["name"] == "vllm"
    assert cfg["algorithm"]["kl_coef"] == 0.04
    assert cfg["model"]["lora"]["rank"] == 128
    assert cfg["model"]["lora"]["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert cfg["train"]["epochs"] == 1.5
    assert cfg["verifier"]["extract"] == "final_line"
    assert cfg["verifier"]["marker"] == "FINAL:"
    assert cfg["verifier"]["timeout_s"] == 0.2
    assert cfg["train"]["select_checkpoint_by"] == "eval_pass@1"
    assert cfg["train"]["merge_with_reference"] == 0.7
    assert cfg["train"]["output_dir"] == "runs/harbor_math"


def test_command_line_overrides_win_over_the_recipe():
    cfg = yaml.safe_load(grpo("config", "recipe=harbor_math", "algorithm.group_size=16", "sampler.temperature=1.0").stdout)
    assert cfg["algorithm"]["group_size"] == 16
    assert cfg["sampler"]["temperature"] == 1.0
    # A group choice on the command line beats the recipe's `override /sampler: vllm`.
    assert compose(["recipe=harbor_math", "sampler=hf"]).sampler.name == "hf"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("algorithm.group_sise=16", ["algorithm.group_sise", "group_size"]),
        ("algorithm.group_size=1", ["algorithm.group_size=1", "G must be >= 2"]),
        ("recipe=nope", ["recipe=nope", "demo", "gsm8k", "harbor_math"]),
        ("sampler=nope", ["sampler=nope", "hf", "vllm"]),
        ("algorithm.kl_coef=-0.1", ["algorithm.kl_coef=-0.1", ">= 0"]),
        ("optimizer.lr=0", ["optimizer.lr=0", "> 0"]),
        ("train.epochs=0", ["train.epochs=0", "> 0"]),
        ("sampler.top_p=1.5", ["sampler.top_p=1.5", "(0, 1]"]),
        ("sampler.top_p=0", ["sampler.top_p=0", "(0, 1]"]),
        ("verifier.timeout_s=0", ["verifier.timeout_s=0", "> 0"]),
        ("algorithm.group_size=abc", ["algorithm.group_size", "integer"]),
        ("algorithm.loss_agg=mean", ["algorithm.loss_agg", "seq_mean", "token_mean", "seq_sum_norm"]),
        ("train.micro_batch_tokens=0", ["train.micro_batch_tokens=0", "> 0"]),
        ("group_size", ["group_size", "KEY=VALUE"]),
        ("algorithm.group_size=[1", ["algorithm.group_size=[1"]),
    ],
)
def test_bad_input_is_one_line_exit_2_without_traceback(override, expected):
    result = grpo("config", "recipe=harbor_math", override)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in expected:
        assert fragment in lines[0]


def test_greedy_sampling_with_groups_warns_loudly():
    result = grpo("config", "recipe=demo", "sampler.temperature=0")
    assert result.returncode == 0
    assert "warning: sampler.temperature=0 (greedy)" in result.stderr
    assert "every advantage is 0" in result.stderr


def test_pass_at_cannot_exceed_samples():
    with pytest.raises(ConfigError, match=r"eval.pass_at=\[1, 16\]"):
        compose(["eval.pass_at=[1,16]", "eval.num_samples=12"])


def test_user_recipe_folders_by_flag_and_environment(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "# @package _global_\ndescription: my recipe\nalgorithm:\n  group_size: 5\ntrain:\n  micro_batch_tokens: 500\n"
    )
    by_flag = grpo("--recipes-dir", str(tmp_path), "config", "recipe=mine")
    assert yaml.safe_load(by_flag.stdout)["algorithm"]["group_size"] == 5
    env = {"GRPO_RECIPES_PATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    listed = grpo("recipes", env=env)
    assert "mine" in listed.stdout and "my recipe" in listed.stdout
    assert yaml.safe_load(grpo("config", "recipe=mine", env=env).stdout)["train"]["output_dir"] == "runs/mine"


def test_every_key_has_help_text_and_a_default_that_validates():
    from grpo_cli.config import Config, key_reference

    rows = key_reference()
    assert len(rows) > 90
    for row in rows:
        assert len(row.help.split()) >= 3, f"{row.key}: help text missing or too short"
    Config.from_dict({})  # the dataclass defaults alone form a valid config


def test_option_files_hold_only_what_they_change():
    """Defaults live in config.py alone: an option file repeating a default would be a second source."""
    import dataclasses

    from grpo_cli.compose import resource_dir
    from grpo_cli.config import Config

    defaults = Config().to_dict()
    for option in resource_dir("conf").glob("*/*.yaml"):
        section = defaults[option.parent.name]
        for key, value in (yaml.safe_load(option.read_text()) or {}).items():
            assert key == "defaults" or section[key] != value, f"{option}: {key}: {value!r} repeats the default"
    assert dataclasses.is_dataclass(Config)


def test_explain_prints_type_default_allowed_and_help():
    result = grpo("config", "--explain", "algorithm.group_size")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "algorithm.group_size (int, default 8)",
        "    G, completions per prompt",
        "    allowed: G must be >= 2: advantages compare completions within a group",
    ]
    section = grpo("config", "--explain", "sampler").stdout
    assert "sampler.top_p (float, default 1.0)" in section and "sampler.kv_cache_gb (float or null, default null)" in section
    assert "allowed: hf, vllm" in section


def test_explain_of_an_unknown_key_suggests_the_closest():
    result = grpo("config", "--explain", "sampler.tok")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: unknown key sampler.tok; did you mean sampler.top_k?"


def test_the_docs_config_reference_matches_the_code():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "config_reference.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
