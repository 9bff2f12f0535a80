"""The wheel carries conf/ and recipes/, so `grpo` works from any directory."""

import subprocess
import sys
import zipfile

from conftest import REPO


def test_wheel_carries_configs_and_works_outside_the_checkout(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("grpo_cli-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "grpo_cli/conf/config.yaml" in names
    assert "grpo_cli/conf/algorithm/grpo.yaml" in names
    for recipe in ("harbor_math", "demo", "gsm8k"):
        assert f"grpo_cli/recipes/{recipe}.yaml" in names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", "import grpo_cli.cli, sys; assert 'site' in grpo_cli.cli.__file__; grpo_cli.cli.main(['recipes'])"],
        cwd=elsewhere, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines()]
    assert {"harbor_math", "demo", "gsm8k"} <= set(listed)
