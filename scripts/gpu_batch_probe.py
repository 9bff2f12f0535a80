"""The automatic sampler.batch_size against free GPU memory (`make gpu-check`'s batch step; CUDA only).

    python scripts/gpu_batch_probe.py --out FILE.json recipe=gpu_check sampler=hf

With sampler.batch_size null the transformers sampler sizes each generate call to GPU_MEMORY_FRACTION of the free
GPU memory, at sequence_bytes per sequence (sampler/hf.py). This builds the learner and its sampler as `grpo
train` does (float32 master weights, the reference copy), hands the sampler as many prompts x G as its automatic
batch holds, runs that one generate call, and writes to FILE.json:
    batch_size       sequences in the automatic batch (the call's)
    free_bytes       free GPU memory before the call, as the sampler counts it (the device's, and what torch's
                     allocator holds unused)
    predicted_bytes  batch_size x sequence_bytes: what the sampler expects the call to take
    peak_bytes       what the call took: torch's peak allocation above the allocation before it
    seconds          the call's
A call that does not fit ends in an out-of-memory error (exit 1), which is the finding.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's grpo_cli, installed or not


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, metavar="FILE.json")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args()

    import torch

    from grpo_cli.compose import compose
    from grpo_cli.data.loaders import load_examples
    from grpo_cli.data.prompts import encode_prompt
    from grpo_cli.models import load_model, load_tokenizer
    from grpo_cli.sampler import build_sampler
    from grpo_cli.sampler.hf import sequence_bytes
    from grpo_cli.training.learner import Learner

    config = compose(args.overrides)
    if config.sampler.name != "hf" or config.sampler.batch_size is not None:
        raise SystemExit("gpu_batch_probe: needs sampler=hf with sampler.batch_size null (the automatic batch)")
    if not torch.cuda.is_available():
        raise SystemExit("gpu_batch_probe: needs a CUDA device")
    tokenizer = load_tokenizer(config.model.name_or_path)
    learner = Learner(config, load_model(config.model), total_steps=1)
    sampler = build_sampler(config, learner.full_model, tokenizer)
    examples = load_examples(config, "train")
    prompts = [encode_prompt(example, tokenizer, config.data) for example in examples]
    G = config.algorithm.group_size
    batch_size = sampler.automatic_batch_size(prompts)
    # Whole groups fill the call (sampler/hf.py _batches); the train split is repeated when it holds fewer.
    prompts = (prompts * (batch_size // G // len(prompts) + 1))[: max(1, batch_size // G)]
    device = learner.device
    free = torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    width = max(len(ids) for ids in prompts)
    predicted = len(prompts) * G * sequence_bytes(learner.full_model.config, width, config.sampler.max_new_tokens,
                                                  torch.finfo(sampler.compute_dtype).bits // 8)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    tic = time.perf_counter()
    groups = sampler.generate(prompts, G, seed=0)
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - tic
    report = {
        "batch_size": len(prompts) * G,
        "free_bytes": free,
        "predicted_bytes": predicted,
        "peak_bytes": torch.cuda.max_memory_allocated(device) - before,
        "seconds": seconds,
        "generated_tokens": sum(len(c.token_ids) for group in groups for c in group),
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
