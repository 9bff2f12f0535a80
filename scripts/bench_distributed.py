"""Data-parallel speed: GRPO steps/s of the tiny model in 1 process and on 2 ranks (torchrun, gloo, CPU).

    .venv/bin/python scripts/bench_distributed.py               # 12 steps of 8 prompts x G=4 each way
    .venv/bin/python scripts/bench_distributed.py --steps 4     # a smoke run

Both runs train the same global batch (train.prompts_per_step is global): the 2 ranks each sample, verify
and learn from half of it. steps/s = steps / the sum of metrics.jsonl's time/step_s after the first step
(model loading, the first eval and warm-up excluded); the 2-rank step time is the slowest rank's. Each rank
runs one torch thread, so on a 2-core machine the ratio measures splitting the work, not extra threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PHASES = ("time/sample_s", "time/verify_s", "time/learn_s", "time/sync_s")
RUN = [
    "recipe=demo", "data.num_train=400", "data.num_eval=40", "sampler.max_new_tokens=32", "algorithm.group_size=4",
    "train.micro_batch_tokens=null", "verifier.rewards.length_penalty=5.0", "eval.pass_at=[1]", "eval.num_prompts=2",
    "verifier.num_workers=1", "train.save_every=1000",
]


def steps_per_second(launcher: list[str], model: Path, out: Path, steps: int, prompts: int) -> float:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    args = [*RUN, f"model.name_or_path={model}", f"train.output_dir={out}", f"train.max_steps={steps}",
            f"train.prompts_per_step={prompts}"]
    subprocess.run([*launcher, "-m", "grpo_cli", "train", *args], env=env, check=True, capture_output=True)
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][1:]
    phases = "  ".join(f"{key.removeprefix('time/')} {sum(m[key] for m in steps) / len(steps):.3f}" for key in PHASES)
    print(f"  {'1 process' if len(launcher) == 1 else '2 ranks  '}  mean s/step: {phases}")
    return len(steps) / sum(m["time/step_s"] for m in steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--prompts-per-step", type=int, default=8)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny"
        subprocess.run([sys.executable, "-m", "grpo_cli", "init-model", *RUN, f"sft.init_from={model}",
                        "model.tiny.num_layers=2"], env=env, check=True, capture_output=True)
        one = steps_per_second([sys.executable], model, Path(tmp) / "one", args.steps, args.prompts_per_step)
        two = steps_per_second([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2"], model,
                               Path(tmp) / "two", args.steps, args.prompts_per_step)
    print(f"{args.prompts_per_step} prompts x G=4 per step, {args.steps} steps, tiny Llama (2 layers), CPU")
    print(f"1 process  {one:.2f} steps/s")
    print(f"2 ranks    {two:.2f} steps/s")
    print(f"ratio 2 ranks / 1 process: {two / one:.2f}x")


if __name__ == "__main__":
    main()
