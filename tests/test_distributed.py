"""Data-parallel runs under torchrun on CPU (gloo): 2 ranks against 1 process on the same global batch."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import distributed_learner_worker as worker
from conftest import TINY_RUN
from grpo_cli.cli import main
from grpo_cli.training import checkpoint, distributed

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


ENV = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def torchrun(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node 2 ARGS` with this checkout's source first."""
    return subprocess.run([*TORCHRUN, "--nproc-per-node=2", *args], env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("dist") / "two.pt"
    result = torchrun([str(TESTS / "distributed_learner_worker.py"), str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out, weights_only=False)


@pytest.mark.parametrize("case", worker.CASES, ids=[f"{agg}-{'lora' if lora else 'full'}-{split}" for agg, lora, split in worker.CASES])
def test_two_ranks_match_one_process_on_the_same_global_batch(case, two_rank_results):
    one, two = worker.run(*case, rank=0, size=1), two_rank_results[case]
    for key in ("loss", "grad_norm", "kl", "ratio_min", "entropy"):
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-6), key
    assert one["loss"][1] != one["loss"][0] and one["kl"][2] > 0  # the steps changed the policy
    assert one["weights"].keys() == two["weights"].keys()
    for name, weight in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], weight, atol=5e-5, rtol=1e-4, msg=name)


# --- grpo train under torchrun --------------------------------------------------------------------------------

RUN = [
    *TINY_RUN, "train.prompts_per_step=2", "algorithm.group_size=2", "sampler.max_new_tokens=8",
    "eval.num_prompts=2", "train.save_every=1", "verifier.num_workers=1", "train.micro_batch_tokens=1",
]


def train_args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "grpo_cli", "train", *RUN, f"model.name_or_path={model}", f"train.output_dir={out}", *extra]


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def files(run: Path) -> set[str]:
    """The run's files, optimizer shards counted as one (their number is the world size that wrote them)."""
    return {re.sub(r"__\d+_\d+\.distcp$", "__*.distcp", str(p.relative_to(run))) for p in run.rglob("*") if p.is_file()}


def optimizer_state(step_dir: Path, tmp_path: Path) -> dict:
    """A checkpoint's optimizer state as one full dictionary, read with torch's own converter."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = tmp_path / f"{step_dir.parent.parent.name}-{step_dir.name}.pt"
    dcp_to_torch_save(step_dir / checkpoint.SHARDED_DIR, out)
    return torch.load(out, weights_only=False)["optimizer"]


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """Two steps on 2 ranks and in 1 process, then one more step of each at the other world size."""
    root = tmp_path_factory.mktemp("runs")
    two, one = root / "two", root / "one"
    result = torchrun(train_args(tiny_model, two, "train.max_steps=2"))
    assert result.returncode == 0, result.stderr[-3000:]
    main(train_args(tiny_model, one, "train.max_steps=2")[2:])
    shutil.copytree(two, root / "two_then_one")
    shutil.copytree(one, root / "one_then_two")
    main(train_args(tiny_model, root / "two_then_one", "train.max_steps=3", "resume=true")[2:])
    result = torchrun(train_args(tiny_model, root / "one_then_two", "train.max_steps=3", "resume=true"))
    assert result.returncode == 0, result.stderr[-3000:]
    return {"two": two, "one": one, "two_then_one": root / "two_then_one", "one_then_two": root / "one_then_two"}


def test_two_rank_run_writes_what_one_process_writes_and_transformers_loads_it(runs):
    from transformers import AutoModelForCausalLM

    assert files(runs["two"]) == files(runs["one"])
    assert "checkpoints/step_000002/optimizer/__*.distcp" in files(runs["two"])
    assert len(list((runs["two"] / "checkpoints/step_000002/optimizer").glob("*.distcp"))) == 2  # one per rank
    two_metrics, one_metrics = records(runs["two"] / "metrics.jsonl"), records(runs["one"] / "metrics.jsonl")
    assert [m["step"] for m in two_metrics] == [1, 2]
    assert [m.keys() for m in two_metrics] == [m.keys() for m in one_metrics]
    # Metrics and evals are the global batch's and the whole eval set's, not rank 0's share.
    for m in two_metrics:  # samples.jsonl logs both groups of a step (one from each rank)
        rewards = [r for group in records(runs["two"] / "samples.jsonl") if group["step"] == m["step"] for r in group["rewards"]]
        assert len(rewards) == 4 and m["reward/mean"] == pytest.approx(sum(rewards) / 4)
    assert [(e["step"], e["num_prompts"], e["num_samples"]) for e in records(runs["two"] / "evals.jsonl")] == [(0, 2, 2), (2, 2, 2)]
    # The same global prompts at each step, whatever the world size.
    prompts = {name: [s["prompt"] for s in records(runs[name] / "samples.jsonl")] for name in ("one", "two")}
    assert prompts["two"] == prompts["one"] and len(prompts["one"]) == 4
    model = AutoModelForCausalLM.from_pretrained(runs["two"] / "checkpoints/step_000002")
    assert model.num_parameters() > 0


@pytest.mark.parametrize("name, written_by", [("two_then_one", "two"), ("one_then_two", "one")])
def test_resume_at_another_world_size_continues_step_data_and_optimizer(name, written_by, runs, tmp_path):
    run = runs[name]
    steps = records(run / "metrics.jsonl")
    assert [m["step"] for m in steps] == [1, 2, 3]
    assert steps[2]["epoch"] == pytest.approx(3 * 2 / 400)
    # Step 3 sees the prompts the schedule gives step 3 at any world size, and not step 2's again.
    step3 = {n: [s["prompt"] for s in records(runs[n] / "samples.jsonl") if s["step"] == 3] for n in ("two_then_one", "one_then_two")}
    step2 = [s["prompt"] for s in records(run / "samples.jsonl") if s["step"] == 2]
    assert step3["two_then_one"] == step3["one_then_two"] and step3[name] != step2
    # The optimizer state written at step 2 by the other world size was loaded: AdamW counts 3 updates, and
    # the steps 1-2 part of the run is the original's, byte for byte.
    before = optimizer_state(runs[written_by] / "checkpoints/step_000002", tmp_path)
    after = optimizer_state(run / "checkpoints/step_000003", tmp_path)
    assert before.keys() == after.keys() and before["state"].keys() == after["state"].keys()
    assert {float(s["step"]) for s in before["state"].values()} == {2.0}
    assert {float(s["step"]) for s in after["state"].values()} == {3.0}
    assert records(run / "metrics.jsonl")[:2] == records(runs[written_by] / "metrics.jsonl")



def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc: no procps needed)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_two_nodes_train_together_and_a_killed_rank_ends_the_other(tiny_model, tmp_path):
    """Two `torchrun --nnodes 2 --nproc-per-node 1` launchers meet through c10d rendezvous on 127.0.0.1 and
    train; once a step is checkpointed, node 1's worker is SIGKILLed. Node 0 must end with an error within
    train.dist_timeout_s, and the last checkpoint must still load."""
    from transformers import AutoModelForCausalLM

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out, timeout_s = tmp_path / "run", 30
    launcher = [*TORCHRUN, "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=grpo-test"]
    args = train_args(tiny_model, out, "train.max_steps=50", f"train.dist_timeout_s={timeout_s}")
    logs = [tmp_path / f"node{i}.log" for i in range(2)]
    nodes = [subprocess.Popen([*launcher, *args], env=ENV, stdout=subprocess.DEVNULL, stderr=log.open("w")) for log in logs]
    try:
        deadline = time.time() + 180
        while checkpoint.read_pointer(out / "checkpoints", "last") is None and time.time() < deadline:
            assert all(node.poll() is None for node in nodes), logs[0].read_text()[-3000:]
            time.sleep(0.2)
        assert [m["step"] for m in records(out / "metrics.jsonl")][:1] == [1]  # a step, taken together
        # Node 1's worker: the child of its launcher (the launchers themselves are alive and watching).
        worker_pids = children(nodes[1].pid)
        killed_at = time.time()
        for pid in worker_pids:
            os.kill(pid, signal.SIGKILL)
        codes = [node.wait(timeout=timeout_s + 60) for node in nodes]
        ended_after = time.time() - killed_at
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    assert worker_pids and all(code != 0 for code in codes), codes
    assert "error: rank 0: another rank failed or did not answer within train.dist_timeout_s=30s" in logs[0].read_text()
    assert ended_after < timeout_s + 30
    last = checkpoint.read_pointer(out / "checkpoints", "last")
    assert last is not None and last.name < "step_000050"
    assert checkpoint.load_trainer_state(last)["run"]["step"] == int(last.name.split("_")[1])
    assert AutoModelForCausalLM.from_pretrained(last).num_parameters() > 0
    assert optimizer_state(last, tmp_path)["state"]


def test_prompts_per_step_must_divide_by_the_world_size(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *TINY_RUN, "train.prompts_per_step=3", "algorithm.group_size=4"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: rank 0: train.prompts_per_step=3 must divide by the world size 2 (every rank takes the same share "
        "of prompts); use a multiple of it"
    )


def test_only_train_runs_under_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as exit_info:
        main(["sft", *TINY_RUN])
    assert exit_info.value.code == 1
    assert "grpo sft runs in one process" in capsys.readouterr().err


def test_shares_cover_every_item_once_in_order():
    items = list(range(7))
    shares = [distributed.share(items, distributed.World(rank=r, size=3)) for r in range(3)]
    assert shares == [[0, 1, 2], [3, 4], [5, 6]]


def test_torchrun_with_one_process_shards_with_fsdp2_and_trains_as_one_process(monkeypatch):
    """`torchrun --nproc-per-node 1` (make gpu-check's FSDP2 step on one GPU) takes the multi-rank path: a process
    group of one, the policy sharded by FSDP2, and the same losses and weights as one plain process."""
    from torch.distributed.fsdp import FSDPModule

    from grpo_cli.training.learner import Learner

    plain = worker.run("seq_mean", False, 16, rank=0, size=1)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for key, value in {"TORCHELASTIC_RUN_ID": "one", "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    with distributed.running(worker.config("seq_mean", False)) as world:
        assert world.size == 1 and distributed.sharded()
        learner = Learner(worker.config("seq_mean", False), worker.tiny_llama(), total_steps=3)
        assert isinstance(learner.policy, FSDPModule) and learner.full_model is not learner.policy
        sharded = worker.run("seq_mean", False, 16, rank=0, size=1)
    assert not distributed.sharded()
    for key in ("loss", "grad_norm", "kl"):
        assert sharded[key] == pytest.approx(plain[key], rel=1e-5, abs=1e-6), key
    for name, weight in plain["weights"].items():
        torch.testing.assert_close(sharded["weights"][name], weight, atol=5e-5, rtol=1e-4, msg=name)
