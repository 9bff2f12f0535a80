"""grpo doctor: facts about this machine, and a problem with its fix for each thing that stops the configured run."""

import platform
import re

import pytest

from grpo_cli.cli import main
from grpo_cli.compose import compose
from grpo_cli.diagnostics import doctor


@pytest.fixture
def quick_vllm_probe(monkeypatch):
    """`import vllm` takes 5-40 s here; the probe's handling is what these tests check."""
    monkeypatch.setattr(doctor, "VLLM_IMPORT_PROBE", "import json")


def test_this_machine_can_run_the_demo(capsys, quick_vllm_probe):
    main(["doctor", "recipe=demo"])
    lines = capsys.readouterr().out.splitlines()
    facts = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in lines[:-1])
    assert facts["python"] == platform.python_version()
    assert facts["torch"].startswith("2.") and facts["math-verify"][0].isdigit()
    assert set(facts) >= {"transformers", "peft", "vllm", "vllm import", "code sandbox"}
    assert facts["code sandbox"] == "ok (bubblewrap: no network, own PID namespace)"  # test_sandbox.py needs it too
    assert any(line.startswith("free disk") and " GiB under " in line for line in lines)
    assert lines[-1] == "ok: demo can run here"


def test_a_broken_vllm_is_a_problem_only_when_the_sampler_is_vllm(monkeypatch):
    monkeypatch.setattr(doctor, "VLLM_IMPORT_PROBE", "import vllm_that_is_not_there")
    found = doctor.diagnose(compose(["recipe=demo", "sampler=hf"]))
    assert ("vllm import", "failed: ModuleNotFoundError: No module named 'vllm_that_is_not_there'") in found.facts
    assert found.problems == []
    found = doctor.diagnose(compose(["recipe=demo", "sampler=vllm"]))
    assert [what for what, _ in found.problems] == [
        "sampler=vllm but vllm import failed: ModuleNotFoundError: No module named 'vllm_that_is_not_there'"]


def test_no_namespace_tools_is_a_problem_for_the_code_verifier(capsys, monkeypatch, quick_vllm_probe):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)  # no bwrap, no setpriv on PATH
    from grpo_cli.verifier.sandbox import check_sandbox_available

    check_sandbox_available.cache_clear()
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["doctor", "recipe=demo", "verifier=code"])
    finally:
        check_sandbox_available.cache_clear()
    assert exit_info.value.code == 1
    out, err = capsys.readouterr()
    problem = next(line for line in out.splitlines() if line.startswith("problem: "))
    assert problem.startswith("problem: verifier=code but the sandbox cannot isolate programs here: ")
    assert "Fix: apt-get install bubblewrap, and run as root or enable unprivileged user namespaces" in problem
    assert err.strip() == "error: 1 problem(s) stop this configuration from running here; fixes above"


def test_too_little_disk_for_the_checkpoints_is_a_problem(tmp_path, monkeypatch, quick_vllm_probe, tiny_model):
    size = sum(f.stat().st_size for f in tiny_model.rglob("*") if f.is_file())
    usage = doctor.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: usage._replace(free=2 * size))
    found = doctor.diagnose(compose(["recipe=demo", f"model.name_or_path={tiny_model}", f"train.output_dir={tmp_path}/run"]))
    (what, fix), = found.problems
    assert what.startswith(f"{2 * size / 2**30:.1f} GiB free under {tmp_path}, a run needs about {3 * size / 2**30:.1f} GiB")
    assert fix == "free space there, or set train.output_dir to a larger disk"


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_start_generates_with_a_tiny_model(capsys):
    main(["doctor", "recipe=demo", "sampler=vllm", "--vllm-start"])
    assert "vllm engine start  ok" in capsys.readouterr().out
