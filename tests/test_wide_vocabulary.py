"""A real vocabulary's memory: sampling and learning a step hold a few vocabulary-sized rows or one micro-batch's
logits, never a float32 [completions, new tokens, vocab] tensor of the whole step (SmolLM2's 49,152 tokens x 512
completions x 64 tokens would be 6.4 GB)."""

import json
import os
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("wide_vocabulary_step.py")


def test_a_step_with_a_49k_vocabulary_holds_no_batch_tokens_vocab_tensor(real_model):
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": str(2**20), "OMP_NUM_THREADS": "1"}  # why: the worker's docstring
    run = subprocess.run([sys.executable, str(WORKER), str(real_model)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    # 32 completions, all 64 tokens long (a random model almost never draws the end of turn): 384 MiB.
    assert report["vocab"] == 49152
    assert sum(report["completion_lengths"]) >= 0.9 * 32 * 64
    assert report["step_tensor_mib"] == 384
    # Measured: sampling 31 MiB (4 float32 rows of 32 x 49,152 are 24 MiB), learning 128 MiB (micro-batches of
    # 256 tokens). Keeping every step's scores made sampling peak at 400 MiB and above.
    assert report["sample_mib"] < 384 / 4, report
    assert report["learn_mib"] < 384 / 2, report
