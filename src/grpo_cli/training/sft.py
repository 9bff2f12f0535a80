"""`grpo sft`: supervised cold start on worked solutions, so GRPO's first groups already hold answers it can parse.

Each train example becomes prompt ids (as the sampler will see them) followed by the solution's ids and EOS. For
a chat prompt (data.prompt_field holding messages) the solution is the assistant turn the row ends with, or
data.solution_field's assistant message (data/loaders.py), and the prompt goes through the chat template with
the generation prompt, as in GRPO.
The loss is the mean negative log-likelihood over solution tokens only; prompt and padding are masked:

    L = -(1 / |S|) * sum_{t in S} log p(x_t | x_<t),   S = solution and EOS positions of the batch

A solution that calls a tool in the tagged form (`<calculator>34 - 28</calculator>`) holds the tool's answers
as the environment writes them (tool_calls.TAGGED_OUTPUT, `\n<output>6</output>\n`). In a rollout those
come from the environment, so they are masked too: the model learns to call the tool and read its output, not
to write outputs itself. Each output is tokenized on its own, as a rollout appends the environment's text
after the model's turn, so the token boundaries match the ones GRPO will sample over.

AdamW on the GRPO learner's schedule (learner.lr_factor): linear warmup over sft.warmup_steps, then cosine
decay to 0 at sft.steps. The model starts from sft.init_from (else model.name_or_path) and is saved to
sft.output_dir (else <train.output_dir>/sft) with its tokenizer, then evaluated like `grpo eval` (eval.num_prompts prompts x eval.num_samples samples), the results
printed and written to eval.json in the saved directory.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import torch

from grpo_cli.config import Config
from grpo_cli.data import Example
from grpo_cli.data.loaders import load_examples
from grpo_cli.data.prompts import encode_prompt
from grpo_cli.environment.tool_calls import TAGGED_OUTPUT
from grpo_cli.errors import GrpoError
from grpo_cli.models import init_dir, load_model, load_tokenizer
from grpo_cli.monitoring.metrics import print_results
from grpo_cli.monitoring.progress import Progress
from grpo_cli.training.learner import lr_factor

IGNORE = -100  # label of positions without a loss (Hugging Face's convention)
TOOL_OUTPUT = re.compile(".*?".join(map(re.escape, TAGGED_OUTPUT.split("{}"))), re.DOTALL)

# (prompt ids, solution ids + EOS, the solution's labels: its ids with IGNORE on tool-output tokens)
Sequence = tuple[list[int], list[int], list[int]]


def encode_solution(solution: str, tokenizer) -> tuple[list[int], list[int]]:
    """(ids, labels) of a worked solution followed by EOS; labels are the ids with IGNORE on the tokens of
    each tool output (TOOL_OUTPUT), which is tokenized apart from the text around it."""
    ids: list[int] = []
    labels: list[int] = []

    def add(text: str, trained: bool) -> None:
        if text:
            piece = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids.extend(piece)
            labels.extend(piece if trained else [IGNORE] * len(piece))

    start = 0
    for span in TOOL_OUTPUT.finditer(solution):
        add(solution[start : span.start()], trained=True)
        add(span.group(), trained=False)
        start = span.end()
    add(solution[start:], trained=True)
    return ids + [tokenizer.eos_token_id], labels + [tokenizer.eos_token_id]


def tokenize(examples: list[Example], tokenizer, config: Config, max_length: int) -> list[Sequence]:
    """(prompt ids, solution ids + EOS, solution labels) for each example that has a solution and fits in
    max_length tokens."""
    sequences = []
    for example in examples:
        prompt = encode_prompt(example, tokenizer, config.data)
        solution, labels = encode_solution(example.solution, tokenizer)
        if len(prompt) + len(solution) <= max_length:
            sequences.append((prompt, solution, labels))
    return sequences


def collate(sequences: list[Sequence], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels (IGNORE on prompt, tool outputs and padding)."""
    width = max(len(prompt) + len(solution) for prompt, solution, _ in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (prompt, solution, solution_labels) in enumerate(sequences):
        ids = prompt + solution
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, len(prompt) : len(ids)] = torch.tensor(solution_labels)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def batches(num_examples: int, batch_size: int, seed: int):
    """Endless index batches: a fresh seeded permutation per epoch."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(num_examples, generator=generator).tolist()
        for start in range(0, num_examples - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def train(model, sequences: list[Sequence], pad_id: int, config: Config, on_step=None) -> list[float]:
    """sft.steps AdamW steps over `sequences` (from tokenize); returns the loss of each step. `on_step(step,
    loss)` runs after each."""
    sft = config.sft
    if len(sequences) < sft.batch_size:
        raise GrpoError(f"sft.batch_size={sft.batch_size}: more than the {len(sequences)} usable train examples; lower it")
    optimizer = torch.optim.AdamW(model.parameters(), lr=sft.lr, betas=(0.9, 0.95), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, sft.warmup_steps, sft.steps, "cosine"))
    model.train()
    losses = []
    for step, indices in zip(range(1, sft.steps + 1), batches(len(sequences), sft.batch_size, config.train.seed)):
        batch = {k: v.to(model.device) for k, v in collate([sequences[i] for i in indices], pad_id).items()}
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if on_step:
            on_step(step, losses[-1])
    return losses


def sft_command(args: argparse.Namespace, config: Config) -> None:
    from grpo_cli.sampler import build_sampler
    from grpo_cli.sampler.base import sampling_seed
    from grpo_cli.training.evaluate import evaluate
    from grpo_cli.verifier import build_verifier

    source = init_dir(config)
    output_dir = Path(config.sft.output_dir or Path(config.train.output_dir) / "sft")
    train_examples = [ex for ex in load_examples(config, "train") if ex.solution]
    if not train_examples:
        raise GrpoError(
            f"data={config.data.name}: no train example has a worked solution (field "
            f"{config.data.solution_field!r}, data.solution_field); SFT trains on them"
        )
    eval_examples = load_examples(config, "eval")
    torch.manual_seed(config.train.seed)
    tokenizer = load_tokenizer(source)
    model = load_model(replace(config.model, name_or_path=source))
    sequences = tokenize(train_examples, tokenizer, config, model.config.max_position_embeddings)
    print(f"sft: {source} -> {output_dir}, {len(sequences)} examples, {config.sft.steps} steps of {config.sft.batch_size}", flush=True)

    def run_eval(step: int) -> dict:
        # Verifier workers are started per eval: idle, they would still cost their start-up during training.
        sampler.sync_weights(model)
        with build_verifier(config.verifier) as verifier:
            seed = sampling_seed(config.train.seed, "sft_eval", step)
            return evaluate(sampler, tokenizer, eval_examples, verifier, config, seed=seed)

    def on_step(step: int, loss: float) -> None:
        progress.advance()
        if step % config.sft.log_every == 0 or step == config.sft.steps:
            lr = config.sft.lr * lr_factor(step - 1, config.sft.warmup_steps, config.sft.steps, "cosine")
            print(f"sft step {step}/{config.sft.steps}  loss {loss:.4f}  lr {lr:.2e}  {time.monotonic() - started:.0f}s", flush=True)
        if config.sft.eval_every and step % config.sft.eval_every == 0 and step < config.sft.steps:
            print_results(f"sft step {step}: eval", {"value": run_eval(step)}, config.eval.pass_at)

    with closing(build_sampler(config, model, tokenizer)) as sampler:
        started = time.monotonic()
        with Progress("sft", config.sft.steps) as progress:
            losses = train(model, sequences, tokenizer.pad_token_id, config, on_step)
        train_seconds = time.monotonic() - started
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        results = run_eval(config.sft.steps)
    results |= {"model": str(output_dir), "sft_steps": config.sft.steps, "sft_final_loss": losses[-1], "sft_seconds": train_seconds}
    (output_dir / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"sft done in {train_seconds:.0f}s, saved {output_dir}")
    print_results(f"sft: {output_dir}", {"value": results}, config.eval.pass_at)
