"""Retention: does the policy still predict general text as well as the model it started from?

GRPO rewards one task; the guide's warning is that general ability collapses without anyone noticing. With
eval.retention_path set, every eval measures the per-token negative log-likelihood of reference responses to
general prompts (teacher-forced: no sampling), in micro-batches of train.micro_batch_tokens:

    retention/nll        mean over all response tokens (EOS included) of -log p(token | prompt, earlier tokens)
    retention/nll_start  the same under the starting model: the trainer's step-0 eval, before any update
    retention/ratio      nll / nll_start: 1 at the start; above train.max_retention_drift a warning says so

The file is JSONL, one {"prompt": ..., "response": ...} per line; prompts are formatted as training prompts are
(data.prompt_template, data.use_chat_template), responses are tokenized as SFT solutions are (+ EOS).
"""

from __future__ import annotations

from pathlib import Path

import torch

from grpo_cli.config import Config
from grpo_cli.data import Example
from grpo_cli.data.loaders import jsonl_rows
from grpo_cli.data.prompts import encode_prompt
from grpo_cli.errors import GrpoError
from grpo_cli.models import compute_autocast
from grpo_cli.sampler.base import Completion
from grpo_cli.training.learner import RolloutBatch, completion_logprobs, micro_batch_token_budget

Pair = tuple[list[int], list[int]]  # (prompt ids, response ids + EOS)


def load_retention_set(config: Config, tokenizer) -> list[Pair]:
    """The (prompt ids, response ids) of eval.retention_path; [] when it is not set."""
    if not config.eval.retention_path:
        return []
    path = Path(config.eval.retention_path)
    if not path.is_file():
        raise GrpoError(f"eval.retention_path={path}: no such file; write a JSONL of {{\"prompt\", \"response\"}} rows there")
    pairs = []
    for where, row in jsonl_rows(path):
        if not isinstance(row.get("prompt"), str) or not isinstance(row.get("response"), str) or not row["response"]:
            raise GrpoError(f"{where}: a retention row needs \"prompt\" and a non-empty \"response\", both strings")
        prompt = encode_prompt(Example(where, row["prompt"], ""), tokenizer, config.data)
        response = tokenizer(row["response"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        pairs.append((prompt, response))
    if not pairs:
        raise GrpoError(f"eval.retention_path={path}: no rows")
    return pairs


@torch.no_grad()
def response_nll(model: torch.nn.Module, pairs: list[Pair], micro_batch_tokens: int | None, compute_dtype: torch.dtype) -> float:
    """Mean per-token NLL (nats) of every response given its prompt under `model`, in eval mode, its forward
    passes autocast to compute_dtype as the learner's are."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    groups = [[Completion(response, [0.0] * len(response), "", "stop")] for _, response in pairs]
    batch = RolloutBatch.build([prompt for prompt, _ in pairs], groups, torch.zeros(len(pairs)))
    total, tokens = 0.0, 0
    for _, micro in batch.micro_batches(micro_batch_token_budget(micro_batch_tokens, batch)):
        micro = micro.to(device)
        with compute_autocast(device, compute_dtype):
            logp, _ = completion_logprobs(model, micro, temperature=1.0)
        total -= logp.float().masked_fill(~micro.completion_mask, 0.0).sum().item()
        tokens += int(micro.completion_mask.sum())
    model.train(was_training)
    return total / tokens


def retention_metrics(nll: float, nll_start: float | None) -> dict[str, float]:
    """The evals.jsonl keys; without a starting value (a run resumed from before the set was added) nll alone."""
    if nll_start is None:
        return {"retention/nll": nll}
    return {"retention/nll": nll, "retention/nll_start": nll_start, "retention/ratio": nll / nll_start}
