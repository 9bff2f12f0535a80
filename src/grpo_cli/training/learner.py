"""The learner: per-token log-probs of sampled completions, and the optimizer update of the GRPO loss.

The trainer hands it one generation batch at a time, `learner.train_on(RolloutBatch.build(...))`, which is

    batch.ref_logprobs = learner.reference_logprobs(batch)   # None when algorithm.kl_coef is 0
    batch.old_logprobs = learner.old_logprobs(batch)         # None when algorithm.num_iterations is 1
    for _ in range(config.algorithm.num_iterations):
        metrics = learner.step(batch)

Log-probs follow the sampler's convention (sampler/base.py): log_softmax(mask(logits / T))[token], T the
sampling temperature, mask the sampler's top-k/top-p truncation.

Every forward pass runs on micro-batches of at most train.micro_batch_tokens padded tokens (RolloutBatch.micro_batches):
the step's completions sorted by length and packed, so little padding is computed. Each distinct prompt is computed
once per pass (PromptPass; within each micro-batch under FSDP) and its keys/values are shared by the completions that
answer it, gradients included (completion_logprobs with share_prompt; `shares_prompt` says for which models).

Memory: a pass holds the logits of one micro-batch at a time, never of the whole step (a 49,152-token vocabulary
makes those 0.2 MB per token in float32), and its log-softmax only a chunk at a time (token_logprobs).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import peft
import torch
import torch.nn.functional as F
from transformers import DynamicCache, PreTrainedModel

from grpo_cli.algo.loss import BatchTotals, clip_cov_mask, high_entropy_mask, loss_mask, merge_metrics, policy_loss
from grpo_cli.config import AUTO_MICRO_BATCH_COMPLETIONS, Config, LoraConfig
from grpo_cli.errors import GrpoError
from grpo_cli.models import compute_autocast, load_checkpoint_weights
from grpo_cli.sampler.base import Completion, sampling_seed
from grpo_cli.training import distributed

# Any valid token id: padded positions are masked out of attention and of the loss.
PAD_ID = 0
# How each policy metric combines over micro-batches and over ranks (the rest are shares of a sum).
METRIC_REDUCTIONS = {"ratio/min": "min", "ratio/max": "max", "logprob_mismatch/max": "max"}
# Scores (tokens x vocabulary) whose fp32 log-softmax exists at once, 64 MiB: 341 tokens of a 49,152-token
# vocabulary, 110 of a 152k one.
LOGPROB_CHUNK_VALUES = 2**24


@dataclass
class RolloutBatch:
    """B completions and their prompts, laid out so every completion starts at the same column P:

        input_ids       [B, P + T]   pad pad p0 p1 p2 | c0 c1 pad     (prompt left-padded, completion right-padded)
        attention_mask  [B, P + T]     0   0  1  1  1 |  1  1   0
        completion_mask [B, T]                        |  1  1   0

    In a multi-turn rollout the completion holds environment tokens too: they are attended to but out of
    completion_mask (Completion.model_mask), so out of the loss, the log-prob mismatch and the KL.

    advantages [B]; sampler_logprobs [B, T] (the sampling engine's); truncated [B] (stopped at the length
    limit); old_logprobs, ref_logprobs [B, T] and pg_mask [B, T] (algorithm.entropy_mask_top and
    clip_cov_frac), filled in by Learner.train_on.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor
    advantages: torch.Tensor
    sampler_logprobs: torch.Tensor
    truncated: torch.Tensor
    old_logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    pg_mask: torch.Tensor | None = None

    @classmethod
    def build(
        cls, prompt_ids: list[list[int]], groups: list[list[Completion]], advantages: torch.Tensor
    ) -> "RolloutBatch":
        """Group j of `groups` answers prompt j; advantages [B] are flat in the same (group-major) order."""
        rows = [(prompt, completion) for prompt, group in zip(prompt_ids, groups, strict=True) for completion in group]
        if any(not prompt for prompt, _ in rows):
            raise ValueError("every prompt needs at least one token: it predicts the first completion token")
        if len(rows) != len(advantages):
            raise ValueError(f"{len(rows)} completions but {len(advantages)} advantages")
        P = max(len(prompt) for prompt, _ in rows)
        T = max(len(completion.token_ids) for _, completion in rows)
        input_ids = torch.full((len(rows), P + T), PAD_ID, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), P + T), dtype=torch.long)
        sampler_logprobs = torch.zeros((len(rows), T))
        completion_mask = torch.zeros((len(rows), T), dtype=torch.bool)
        for i, (prompt, completion) in enumerate(rows):
            n = len(completion.token_ids)
            input_ids[i, P - len(prompt) : P + n] = torch.tensor(prompt + completion.token_ids)
            attention_mask[i, P - len(prompt) : P + n] = 1
            sampler_logprobs[i, :n] = torch.tensor(completion.logprobs)
            completion_mask[i, :n] = True if completion.model_mask is None else torch.tensor(completion.model_mask)
        return cls(
            input_ids=input_ids,
            attention_mask=attention_mask,
            completion_mask=completion_mask,
            advantages=advantages.float(),
            sampler_logprobs=sampler_logprobs,
            truncated=torch.tensor([completion.finish_reason == "length" for _, completion in rows]),
        )

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    @property
    def completion_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_width :]

    def select(self, rows: torch.Tensor | slice) -> "RolloutBatch":
        """The completions at `rows` (a bool mask, indices or a slice), e.g. those the zero-variance filter keeps."""
        return self._map(lambda tensor: tensor[rows])

    def to(self, device: torch.device) -> "RolloutBatch":
        return self._map(lambda tensor: tensor.to(device))

    def micro_batches(self, token_budget: int, share_prompt: bool = False) -> list[tuple[torch.Tensor, "RolloutBatch"]]:
        """The completions sorted by length (prompt + completion, longest first) and packed greedily into
        micro-batches of at most `token_budget` padded tokens (a longer completion alone gets its own), each
        trimmed to its own longest prompt and completion; returns (rows of `self`, micro-batch) pairs.

        A micro-batch of n completions, U distinct prompts, longest prompt P and completion T costs n x (P + T)
        tokens, or U x P + n x T when `share_prompt` (each distinct prompt computed once, completion_logprobs).
        """
        P = self.prompt_width
        prompt_lengths = self.attention_mask[:, :P].sum(dim=1).tolist()
        completion_lengths = self.completion_lengths.tolist()
        prompts = self.distinct_prompts()[1].tolist()
        order = sorted(range(self.size), key=lambda i: -(prompt_lengths[i] + completion_lengths[i]))
        parts, rows, seen, longest_prompt, longest_completion = [], [], set(), 0, 0
        for i in order:
            prompt, completion = max(longest_prompt, prompt_lengths[i]), max(longest_completion, completion_lengths[i])
            distinct = len(seen | {prompts[i]})
            cost = (distinct * prompt + (len(rows) + 1) * completion if share_prompt
                    else (len(rows) + 1) * (prompt + completion))
            if rows and cost > token_budget:
                parts.append(rows)
                rows, seen, prompt, completion = [], set(), prompt_lengths[i], completion_lengths[i]
            rows.append(i)
            seen.add(prompts[i])
            longest_prompt, longest_completion = prompt, completion
        if rows:
            parts.append(rows)
        return [(index, self.select(index)._trimmed()) for index in map(torch.tensor, parts)]

    @property
    def prompt_width(self) -> int:
        return self.input_ids.shape[1] - self.completion_mask.shape[1]

    @property
    def completion_lengths(self) -> torch.Tensor:
        """[B] tokens in each completion (the loss mask may leave some out: completion_mask is not a length)."""
        return self.attention_mask[:, self.prompt_width :].sum(dim=1)

    def distinct_prompts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The distinct prompts [U, P] (left-padded with -1) and [B] the index among them of each completion's
        prompt (a group's G completions share one)."""
        P = self.prompt_width
        prompts = self.input_ids[:, :P].masked_fill(self.attention_mask[:, :P] == 0, -1)
        return torch.unique(prompts, dim=0, return_inverse=True)

    def _trimmed(self) -> "RolloutBatch":
        P = self.prompt_width
        prompt_start = int(self.attention_mask[:, :P].any(dim=0).float().argmax())
        completion_end = int(self.completion_lengths.max())
        columns = slice(prompt_start, P + completion_end)
        trimmed = {"input_ids": self.input_ids[:, columns], "attention_mask": self.attention_mask[:, columns]}
        for name in ("completion_mask", "sampler_logprobs", "old_logprobs", "ref_logprobs", "pg_mask"):
            tensor = getattr(self, name)
            trimmed[name] = None if tensor is None else tensor[:, :completion_end]
        return dataclasses.replace(self, **trimmed)

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "RolloutBatch":
        tensors = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return RolloutBatch(**{name: None if t is None else fn(t) for name, t in tensors.items()})


def completion_logprobs(
    model: torch.nn.Module,
    batch: RolloutBatch,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    share_prompt: bool | PromptPass = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs [B, T] of the completion tokens of `batch` (one micro-batch) under `model`, and the policy's
    entropy [B, T] at each completion position (differentiable like the log-probs); top_k/top_p as in
    token_logprobs.

    share_prompt (for models where `shares_prompt` holds): True runs each distinct prompt of `batch` once
    (PromptPass.run) and the completions answering it attend to its keys/values; a PromptPass (selected to
    `batch`'s rows) gives prompts already run. Either gives the same log-probs and gradients as running
    every completion with its own copy of the prompt.
    """
    tokens = batch.completion_ids
    if share_prompt is False:
        return token_logprobs(_completion_logits(model, batch), tokens, temperature, top_k=top_k, top_p=top_p)
    prompts = PromptPass.run(model, batch) if share_prompt is True else share_prompt
    first_logits, later_logits = _logits_after_prompts(model, batch, prompts)
    first = token_logprobs(first_logits, tokens[:, 0], temperature, top_k=top_k, top_p=top_p)
    later = token_logprobs(later_logits, tokens[:, 1:], temperature, top_k=top_k, top_p=top_p)
    return torch.cat([first[0][:, None], later[0]], dim=1), torch.cat([first[1][:, None], later[1]], dim=1)


def shares_prompt(model: torch.nn.Module) -> bool:
    """Whether completion_logprobs can share each prompt's keys/values across its completions on `model`: a
    transformers model (LoRA-wrapped or not) without sliding-window layers (their cache keeps only the window),
    and not recomputing its layers in this backward pass (gradient checkpointing in training mode drops the
    cache)."""
    base = model.get_base_model() if isinstance(model, peft.PeftModel) else model
    if not isinstance(base, PreTrainedModel):
        return False
    sliding = "sliding_attention" in (getattr(base.config, "layer_types", None) or [])
    return not sliding and not (model.training and base.is_gradient_checkpointing)


def _completion_logits(model: torch.nn.Module, batch: RolloutBatch) -> torch.Tensor:
    """[B, T, V] the logits that predict each completion token, every row run with its own prompt."""
    T, P = batch.completion_mask.shape[1], batch.prompt_width
    # Positions count from each prompt's first real token, as when the completion was sampled (rotary models
    # would not notice a shift, models with absolute position embeddings would).
    position_ids = (batch.attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    # The logits at column j predict token j + 1: completion tokens P..P+T-1 come from columns P-1..P+T-2.
    return model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=position_ids,
        logits_to_keep=torch.arange(P - 1, P + T - 1, device=batch.input_ids.device),
    ).logits


@dataclass
class PromptPass:
    """The distinct prompts of a batch, each run once with a KV cache, and what their completions need:

        keys, values   per layer [U, H, P, D]   prompts left-padded to the longest, P
        mask           [U, P]                   1 at prompt tokens
        last_logits    [U, V]                   the logits that predict each completion's first token
        prompt_of_row  [B]                      which prompt each completion answers

    With `detach` (Learner.backward) keys, values and last_logits are leaf tensors cut from the prompt
    passes' graph (those that need a gradient: with LoRA on q_proj the first layer's keys need none): each
    micro-batch's backward accumulates their gradients, and `backward()` then runs the prompt passes' backward
    once. Their activations live until then (prompts only, the completions come and
    go micro-batch by micro-batch).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor
    last_logits: torch.Tensor
    prompt_of_row: torch.Tensor
    outputs: list[torch.Tensor] = dataclasses.field(default_factory=list)

    @classmethod
    def run(cls, model: torch.nn.Module, batch: RolloutBatch, token_budget: int | None = None,
            detach: bool = False) -> "PromptPass":
        """Runs `batch`'s distinct prompts on `model`, longest first, in passes of at most `token_budget`
        padded tokens (None: one pass)."""
        prompts, prompt_of_row = batch.distinct_prompts()
        lengths = (prompts >= 0).sum(dim=1)
        order = lengths.argsort(descending=True, stable=True)
        prompts, lengths = prompts[order], lengths[order]
        longest = int(lengths[0])
        prompts = prompts[:, prompts.shape[1] - longest :]
        passes, start = [], 0
        while start < len(prompts):  # sorted longest first: a pass is as wide as its first prompt
            end = start + max(1, (token_budget or len(prompts) * longest) // int(lengths[start]))
            passes.append(_prompt_pass(model, prompts[start:end, longest - int(lengths[start]) :], longest))
            start = end
        num_layers = len(passes[0][0])
        outputs = [torch.cat([p[0][layer] for p in passes]) for layer in range(num_layers)]
        outputs += [torch.cat([p[1][layer] for p in passes]) for layer in range(num_layers)]
        outputs.append(torch.cat([p[2] for p in passes]))
        kept = [o.detach().requires_grad_(o.requires_grad) for o in outputs] if detach else outputs
        return cls(
            keys=kept[:num_layers],
            values=kept[num_layers:-1],
            mask=(prompts >= 0).long(),
            last_logits=kept[-1],
            prompt_of_row=order.argsort()[prompt_of_row],
            outputs=outputs if detach else [],
        )

    def select(self, rows: torch.Tensor) -> "PromptPass":
        """The same prompts for the completions `rows` of the batch (one micro-batch's)."""
        return dataclasses.replace(self, prompt_of_row=self.prompt_of_row[rows.to(self.prompt_of_row.device)])

    def backward(self) -> None:
        """The prompt passes' backward from the gradients the micro-batches accumulated (detach only)."""
        leaves = self.keys + self.values + [self.last_logits]
        pairs = [(out, leaf.grad) for out, leaf in zip(self.outputs, leaves, strict=True) if leaf.grad is not None]
        if pairs:
            torch.autograd.backward([out for out, _ in pairs], grad_tensors=[grad for _, grad in pairs])


def _prompt_pass(model: torch.nn.Module, prompts: torch.Tensor, width: int) -> tuple[list, list, torch.Tensor]:
    """Per-layer keys and values [n, H, width, D] (left-padded with zeros) and last-position logits [n, V] of
    `prompts` [n, P] (left-padded with -1)."""
    mask = (prompts >= 0).long()
    out = model(
        input_ids=prompts.clamp(min=PAD_ID),
        attention_mask=mask,
        position_ids=(mask.cumsum(dim=1) - 1).clamp(min=0),
        use_cache=True,
        logits_to_keep=1,
    )
    padding = (0, 0, width - prompts.shape[1], 0)
    keys = [F.pad(layer.keys, padding) for layer in out.past_key_values.layers]
    values = [F.pad(layer.values, padding) for layer in out.past_key_values.layers]
    return keys, values, out.logits[:, -1]


def _logits_after_prompts(model: torch.nn.Module, batch: RolloutBatch, prompts: PromptPass) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits that predict each completion token, the completions run on top of their prompts' keys/values,
    indexed out of `prompts` (a differentiable index: gradients from every completion flow back into its
    prompt): [B, V] the prompt's last position's, which predict the first completion token, and [B, T - 1, V]
    the completion's columns 0..T-2, which predict the others (apart: joined they would be a second copy)."""
    T = batch.completion_mask.shape[1]
    rows = prompts.prompt_of_row
    width = int(prompts.mask[rows].sum(dim=1).max())
    kv = [(keys[rows, :, -width:], values[rows, :, -width:]) for keys, values in zip(prompts.keys, prompts.values)]
    cache = DynamicCache(ddp_cache_data=kv)
    prompt_mask = prompts.mask[rows, -width:]
    completion_pass = model(
        input_ids=batch.completion_ids,
        attention_mask=torch.cat([prompt_mask, batch.attention_mask[:, batch.prompt_width :]], dim=1),
        position_ids=prompt_mask.sum(dim=1, keepdim=True) + torch.arange(T, device=rows.device),
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=torch.arange(0, T - 1, device=rows.device),
    )
    return prompts.last_logits[rows], completion_pass.logits


def token_logprobs(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float,
    chunk_values: int = LOGPROB_CHUNK_VALUES,
    top_k: int = 0,
    top_p: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(z)[token] = z[token] - logsumexp(z), z = logits / T in fp32 outside the top-k/top-p support
    set to -inf (sampling_support), and the entropy H = logsumexp(z) - sum_v softmax(z)_v z_v of that same
    distribution; logits [..., V], tokens [...]. With top_k = 0 and top_p = 1 nothing is truncated. Both are
    differentiable when the logits are (the entropy bonus needs H's gradient).

    z exists for at most `chunk_values` / V tokens at a time, in forward and in backward, which recomputes it
    (TokenLogprobs): beyond the logits and their gradient a call holds a few chunks, never a second
    [tokens, V] copy.
    """
    chunk_tokens = max(1, chunk_values // logits.shape[-1])
    logp, entropy = TokenLogprobs.apply(logits.flatten(0, -2), tokens.flatten(), temperature, top_k, top_p, chunk_tokens)
    return logp.view_as(tokens), entropy.view_as(tokens)


class TokenLogprobs(torch.autograd.Function):
    """token_logprobs on logits [N, V] and tokens [N], `chunk_tokens` rows at a time. Backward recomputes each
    chunk's z and p = softmax(z) (the log-normalizers and entropies are kept, [N] each) and applies the gradient
    in closed form, y the token, log p_v = z_v - logsumexp(z):
        d log p_y / d z_v = [v = y] - p_v          d H / d z_v = -p_v (log p_v + H)
    which is 0 outside the support (p_v = 0; z_v there is a constant -inf), and d z / d logits = 1 / T.
    """

    @staticmethod
    def forward(ctx, logits, tokens, temperature, top_k, top_p, chunk_tokens):
        logp = logits.new_empty(len(tokens), dtype=torch.float32)
        entropy, log_normalizer = torch.empty_like(logp), torch.empty_like(logp)
        for rows in _chunks(len(tokens), chunk_tokens):
            z = _truncated_scores(logits[rows], tokens[rows], temperature, top_k, top_p)
            log_normalizer[rows] = torch.logsumexp(z, dim=-1)
            logp[rows] = z.gather(-1, tokens[rows, None])[:, 0] - log_normalizer[rows]
            # -inf outside the support: clamped, so that 0 x -inf does not turn the sum into NaN
            z_p = torch.softmax(z, dim=-1).mul_(z.clamp_(min=torch.finfo(z.dtype).min))
            entropy[rows] = log_normalizer[rows] - z_p.sum(dim=-1)
        ctx.save_for_backward(logits, tokens, log_normalizer, entropy)
        ctx.settings = (temperature, top_k, top_p, chunk_tokens)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        logits, tokens, log_normalizer, entropy = ctx.saved_tensors
        temperature, top_k, top_p, chunk_tokens = ctx.settings
        grad = torch.empty_like(logits)
        for rows in _chunks(len(tokens), chunk_tokens):
            z = _truncated_scores(logits[rows], tokens[rows], temperature, top_k, top_p)
            p = torch.softmax(z, dim=-1)
            # -p_v (g_logp + g_H (log p_v + H)) with log p_v + H = z_v - (logsumexp(z) - H), then + g_logp at the
            # token. Where z_v = -inf, p_v = 0: any finite stand-in for z_v gives the 0 owed there.
            g = z.nan_to_num_(neginf=0.0).sub_((log_normalizer[rows] - entropy[rows])[:, None])
            g = g.mul_(grad_entropy[rows, None]).add_(grad_logp[rows, None]).mul_(p).neg_()
            g.scatter_add_(-1, tokens[rows, None], grad_logp[rows, None])
            grad[rows] = g.div_(temperature)
        return grad, None, None, None, None, None


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(start, start + size) for start in range(0, n, size)]


def _truncated_scores(logits: torch.Tensor, tokens: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """z = logits / T in fp32, -inf outside the sampling support. The sampled token is always kept: it was
    drawn, so it was in the sampler's support, whatever rounding moved it across the boundary here."""
    z = logits.float() / temperature
    if top_k == 0 and top_p == 1.0:
        return z
    keep = sampling_support(z.detach(), top_k, top_p)
    keep[torch.arange(len(tokens), device=keep.device), tokens] = True
    return z.masked_fill(~keep, float("-inf"))


def sampling_support(z: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """The tokens top-k then top-p sampling keeps, as transformers' and vLLM's samplers choose them; z [N, V]
    temperature-scaled logits, returns a bool mask [N, V].

    top-k keeps every token whose score reaches the k-th largest (ties kept); top-p then sorts the remaining
    probabilities ascending and drops those whose cumulative sum is <= 1 - top_p, never the most likely token.
    """
    keep = torch.ones_like(z, dtype=torch.bool)
    if 0 < top_k < z.shape[-1]:
        keep = z >= z.topk(top_k, dim=-1).values[:, -1:]
    if top_p < 1.0:
        sorted_z, order = z.masked_fill(~keep, float("-inf")).sort(dim=-1)
        dropped = sorted_z.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
        dropped[:, -1] = False
        keep &= ~dropped.scatter(1, order, dropped)
    return keep


def add_lora(model: torch.nn.Module, lora: LoraConfig) -> peft.PeftModel:
    """`model` with LoRA adapters on `lora.target_modules` (matched by module name); its own weights frozen."""
    weight_layers = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if not list(module.children()) and getattr(module, "weight", None) is not None and module.weight.dim() == 2
        }
    )
    missing = [name for name in lora.target_modules if name not in weight_layers]
    if missing:
        raise GrpoError(
            f"model.lora.target_modules={lora.target_modules}: {', '.join(missing)} matches no layer of "
            f"{type(model).__name__}; its layers with weight matrices are {', '.join(weight_layers)}"
        )
    adapter = peft.LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, adapter)


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """The learning rate at training step `step` (0-based) as a fraction of optimizer.lr:

    (step + 1) / (warmup_steps + 1) during warmup, then 1 (constant), or from 1 at the end of warmup to 0 at
    total_steps with progress p = (step - warmup_steps) / (total_steps - warmup_steps): 1 - p (linear, TRL's
    default) or (1 + cos(pi p)) / 2 (cosine).
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def micro_batch_token_budget(micro_batch_tokens: int | None, batch: RolloutBatch) -> int:
    """train.micro_batch_tokens, or when it is null AUTO_MICRO_BATCH_COMPLETIONS completions of `batch`'s
    longest prompt and completion (its padded width)."""
    return micro_batch_tokens or AUTO_MICRO_BATCH_COMPLETIONS * batch.input_ids.shape[1]


class Learner:
    """Owns the policy, its reference and the optimizer; no sampling, verifying or I/O.

    `learner.policy` is the model being trained: sample from it and checkpoint it. With model.lora.enabled
    it is `model` wrapped with LoRA adapters (only they train) and the reference is the same model with the
    adapter disabled. Otherwise every weight trains and the reference is a frozen copy of `model` as given,
    made only when algorithm.kl_coef > 0.

    Under torchrun (distributed.py) the policy and the reference are sharded with FSDP2 and `full_model` is
    an unsharded copy of the policy for the sampler, refreshed by `refresh_full_model`; in one process
    `full_model` is the policy itself. Every method is then called by all ranks together, each with its own
    share of the batch; losses, gradients and metrics are those of the global batch.

    total_steps (training steps, for the cosine schedule) and optimizer.warmup_steps count training steps;
    the num_iterations updates of one training step share its learning rate. The schedule advances once per
    `train_on` call, that is per training step, whether its updates were applied or skipped (non-finite, or
    no completions kept): the learning rate of training step s is the schedule's value at s, whatever
    happened before, and the scheduler's state in a checkpoint restores it exactly.

    Precision: `model` arrives in model.dtype, which is the compute dtype. In bfloat16 or float16 the
    trainable weights and AdamW's moments are kept in float32 (master weights: at lr 1e-6 a bfloat16 weight
    would round most updates away) and forward passes run under autocast in the compute dtype. Full
    fine-tuning converts the policy to float32 (the reference copy stays in the compute dtype); peft already
    keeps LoRA adapters in float32. Samplers get the weights in the compute dtype (sampler/__init__.py).
    """

    def __init__(self, config: Config, model: torch.nn.Module, total_steps: int):
        self.algorithm = config.algorithm
        self.seed = config.train.seed
        self.generation_budget = config.sampler.max_new_tokens
        self.temperature = config.sampler.temperature or 1.0
        # The sampler's top-k/top-p support (none when greedy): log-probs are renormalized over it on both sides.
        sampled = config.sampler.temperature > 0
        self.top_k = config.sampler.top_k if sampled else 0
        self.top_p = config.sampler.top_p if sampled else 1.0
        self.micro_batch_tokens = config.train.micro_batch_tokens
        self.max_grad_norm = config.optimizer.max_grad_norm
        self.lora = config.model.lora.enabled
        self.device = next(model.parameters()).device
        self.compute_dtype = next(model.parameters()).dtype
        self.reference = None
        if not self.lora and self.algorithm.kl_coef > 0:
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.policy = add_lora(model, config.model.lora) if self.lora else model.float()
        self.full_model = self.policy
        if distributed.sharded():
            self.full_model = copy.deepcopy(self.policy).requires_grad_(False)
            distributed.shard(self.policy, self.device)
            if self.reference is not None:
                distributed.shard(self.reference, self.device, trains=False)
        self.trainable_parameters = [p for p in self.policy.parameters() if p.requires_grad]

        opt = config.optimizer
        self.optimizer = torch.optim.AdamW(
            self.trainable_parameters, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, opt.warmup_steps, total_steps, opt.schedule)
        )

    @torch.no_grad()
    def reference_logprobs(self, batch: RolloutBatch) -> torch.Tensor | None:
        """[B, T] completion log-probs under the reference policy; None when the KL coefficient is 0."""
        if self.algorithm.kl_coef == 0:
            return None
        if self.lora:
            with self.policy.disable_adapter():
                return self._logprobs(self.policy, batch)[0]
        return self._logprobs(self.reference, batch)[0]

    @torch.no_grad()
    def policy_logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        """[B, T] completion log-probs under the current policy (0 at padding)."""
        return self._logprobs(self.policy, batch)[0]

    def old_logprobs(self, batch: RolloutBatch) -> torch.Tensor | None:
        """The policy's log-probs before this batch's updates; None when num_iterations is 1 (the loss then
        uses the policy's own, detached)."""
        if self.algorithm.num_iterations == 1:
            return None
        return self.policy_logprobs(batch)

    @torch.no_grad()
    def high_entropy_tokens(self, batch: RolloutBatch) -> torch.Tensor | None:
        """[B, T] bool: the loss tokens that keep their policy loss under algorithm.entropy_mask_top, ranked over
        the whole batch by the policy's entropy before this batch's updates; None when it is 1 (all tokens)."""
        if self.algorithm.entropy_mask_top == 1:
            return None
        _, entropy = self._logprobs(self.policy, batch)
        mask = loss_mask(batch.completion_mask, batch.truncated, self.algorithm)
        return high_entropy_mask(entropy, mask, self.algorithm.entropy_mask_top)

    @torch.no_grad()
    def clip_cov_tokens(self, batch: RolloutBatch) -> torch.Tensor | None:
        """[B, T] bool: the loss tokens that keep their policy gradient under algorithm.clip_cov_frac (Clip-Cov,
        algo/loss.py), from the sampler's log-probs (the policy before this batch's updates, as the learner
        computes them up to logprob_mismatch: no extra forward pass) and drawn with a seed of train.seed and
        the step; None when clip_cov_frac is 0."""
        if not self.algorithm.clip_cov_frac:
            return None
        mask = loss_mask(batch.completion_mask, batch.truncated, self.algorithm)
        generator = torch.Generator().manual_seed(sampling_seed(self.seed, "clip_cov", self.scheduler.last_epoch))
        return clip_cov_mask(batch.sampler_logprobs, batch.advantages, mask, self.algorithm, generator)

    def train_on(self, batch: RolloutBatch) -> dict[str, float]:
        """One training step: all num_iterations updates on one generation batch, then the schedule moves to
        the next step. Returns the last update's metrics, with "nonfinite" the fraction of the updates skipped
        (1.0: the policy did not change) and the first update's sampler/learner log-prob mismatch."""
        batch = batch.to(self.device)
        batch.ref_logprobs = self.reference_logprobs(batch)
        batch.old_logprobs = self.old_logprobs(batch)
        batch.pg_mask = self.high_entropy_tokens(batch)
        cov_kept = self.clip_cov_tokens(batch)
        clip_cov = {}
        if cov_kept is not None:
            batch.pg_mask = cov_kept if batch.pg_mask is None else batch.pg_mask & cov_kept
            mask = loss_mask(batch.completion_mask, batch.truncated, self.algorithm)
            dropped, tokens = distributed.all_reduce([int((mask & ~cov_kept).sum()), int(mask.sum())])
            clip_cov = {"clip/cov_frac": dropped / max(tokens, 1)}
        updates = [self.step(batch) for _ in range(self.algorithm.num_iterations)]
        self.scheduler.step()
        # Before the first update the policy is the one that sampled: only then is the mismatch meaningful.
        first = {key: updates[0][key] for key in ("logprob_mismatch/mean", "logprob_mismatch/max")}
        skipped = sum(update["nonfinite"] for update in updates) / len(updates)
        return updates[-1] | first | clip_cov | {"nonfinite": skipped}

    def skip_step(self) -> dict[str, float | None]:
        """A training step with nothing to learn from (algorithm.filter_zero_variance dropped every group): no
        update, but the schedule moves to the next step as after `train_on`. Returns `skipped_metrics()`."""
        metrics = self.skipped_metrics()
        self.scheduler.step()
        return metrics

    def skipped_metrics(self) -> dict[str, float | None]:
        """The metrics of a step with nothing to learn from (algorithm.filter_zero_variance dropped every
        group): the keys `train_on` returns, None where they measure a batch or an update, and this step's
        learning rate."""
        measured = [
            "loss", "grad_norm", "clip/low_frac", "clip/high_frac", "clip/logratio_clamped", "ratio/mean",
            "ratio/min", "ratio/max", "advantage/mean", "advantage/std", "entropy/mean", "logprob_mismatch/mean",
            "logprob_mismatch/max",
        ]
        if self.algorithm.policy_loss == "dual_clip":
            measured.append("clip/dual_frac")
        if self.algorithm.clip_cov_frac:
            measured.append("clip/cov_frac")
        if self.algorithm.kl_coef > 0:
            measured += ["kl/mean", "kl/clamped"]
        if self.algorithm.tis_cap is not None:
            measured.append("tis/weight_mean")
        return dict.fromkeys(measured) | {"lr": self.scheduler.get_last_lr()[0], "nonfinite": 0.0}

    def step(self, batch: RolloutBatch) -> dict[str, float]:
        """One optimizer update on `batch` at the current training step's learning rate; returns its metrics.

        A non-finite loss or gradient norm skips the update, as if it never happened (weights and optimizer
        untouched), and sets metrics["nonfinite"] to 1.0, so the trainer can count and stop.
        """
        self.optimizer.zero_grad(set_to_none=True)
        metrics = self.backward(batch)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable_parameters, self.max_grad_norm)
        grad_norm = distributed.full_tensor(grad_norm).item()
        finite = math.isfinite(metrics["loss"]) and math.isfinite(grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        if finite:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return metrics | {"grad_norm": grad_norm, "lr": lr, "nonfinite": float(not finite)}

    def backward(self, batch: RolloutBatch) -> dict[str, float]:
        """Accumulate the gradient of the batch loss over micro-batches; the loss and policy metrics.

        Each micro-batch's loss is normalized by the whole batch's totals, so the accumulated loss and
        gradient are those of the batch loss computed in one go, for every loss_agg.
        """
        self.policy.train()
        batch = batch.to(self.device)
        mask = loss_mask(batch.completion_mask, batch.truncated, self.algorithm)
        totals = distributed.global_totals(BatchTotals.of(mask, self.generation_budget))
        num_completion_tokens = max(int(distributed.all_reduce([int(batch.completion_mask.sum())])[0]), 1)
        parts = []
        share_prompt = shares_prompt(self.policy)
        prompts = self._prompt_pass(self.policy, batch, share_prompt, detach=True)
        for rows, micro in self._micro_batches(batch, share_prompt):
            with self._autocast():
                logp, entropy = completion_logprobs(
                    self.policy, micro, self.temperature, self.top_k, self.top_p,
                    share_prompt if prompts is None else prompts.select(rows),
                )
            loss, metrics = policy_loss(
                logp,
                micro.old_logprobs,
                micro.ref_logprobs,
                micro.advantages,
                micro.completion_mask,
                self.algorithm,
                truncated=micro.truncated,
                sampler_logp=micro.sampler_logprobs,
                totals=totals,
                entropy=entropy,
                pg_mask=micro.pg_mask,
            )
            loss.backward()
            metrics["entropy/mean"] = entropy.detach().masked_fill(~micro.completion_mask, 0.0).sum() / num_completion_tokens
            # The engine's log-probs against ours for the same tokens: weight sync or numerics gone wrong.
            mismatch = (logp.detach() - micro.sampler_logprobs).abs().masked_fill(~micro.completion_mask, 0.0)
            metrics["logprob_mismatch/mean"] = mismatch.sum() / num_completion_tokens
            metrics["logprob_mismatch/max"] = mismatch.max()
            parts.append(metrics)
        if prompts is not None:
            prompts.backward()
        advantages = torch.tensor(distributed.gather(batch.advantages.tolist()))
        return distributed.reduce_metrics(merge_metrics(parts), METRIC_REDUCTIONS) | {
            "advantage/mean": advantages.mean().item(),
            "advantage/std": advantages.std().item() if len(advantages) > 1 else 0.0,
        }

    def state_dict(self) -> dict:
        """Optimizer and schedule state, for resuming. The optimizer state is keyed by parameter name, its
        tensors this rank's shards (distributed.save_sharded writes it at any world size, load_sharded reads
        it back at any other)."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        distributed.reshard(self.policy)
        return {"optimizer": get_optimizer_state_dict(self.policy, self.optimizer), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(self.policy, self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def load_weights(self, directory) -> None:
        """A checkpoint's trained weights (models.load_checkpoint_weights) into the policy, and its shards."""
        load_checkpoint_weights(self.full_model, directory)
        if self.full_model is not self.policy:
            distributed.scatter_from(self.policy, self.full_model)

    def refresh_full_model(self) -> torch.nn.Module:
        """`full_model` with the policy's current weights (gathered from the shards one tensor at a time)."""
        if self.full_model is not self.policy:
            distributed.copy_into(self.full_model, self.policy)
        return self.full_model

    def bare_forward_backward(self, batch: RolloutBatch) -> None:
        """The bare limit `grpo bench` measures the learner against: one forward and backward of the policy over
        `batch`'s tokens, every completion with its own copy of the prompt, in micro-batches packed by length
        under the same token budget, the loss a plain cross-entropy of the completion tokens (no log-prob
        truncation, KL or metrics); the gradient is discarded."""
        self.policy.train()
        batch = batch.to(self.device)
        for _, micro in self._micro_batches(batch, share_prompt=False):
            with self._autocast():
                logits = _completion_logits(self.policy, micro)
            tokens = micro.completion_ids.masked_fill(~micro.attention_mask[:, micro.prompt_width :].bool(), -100)
            F.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten(), reduction="sum").backward()
        self.optimizer.zero_grad(set_to_none=True)

    def _micro_batches(self, batch: RolloutBatch, share_prompt: bool) -> list[tuple[torch.Tensor, RolloutBatch]]:
        """`batch`'s micro-batches (RolloutBatch.micro_batches: (rows, micro-batch) pairs). Under FSDP every rank
        must run as many forward and backward passes, so ranks with fewer get masked-out padding micro-batches
        (no rows), which run the model and add nothing to the loss, the gradient or the metrics."""
        micro_batches = batch.micro_batches(micro_batch_token_budget(self.micro_batch_tokens, batch), share_prompt)
        most = int(distributed.all_reduce([len(micro_batches)], "max")[0])
        padding = (torch.zeros(0, dtype=torch.long), _padding_batch(batch))
        return micro_batches + [padding] * (most - len(micro_batches))

    def _prompt_pass(self, model: torch.nn.Module, batch: RolloutBatch, share_prompt: bool,
                     detach: bool = False) -> PromptPass | None:
        """`batch`'s distinct prompts run once for the whole pass (PromptPass.run, passes under the micro-batch
        token budget), or None where every micro-batch runs its own: when the prompt is not shared, and under
        FSDP, where ranks would have to agree on the number of prompt passes and the prompt backward runs
        after the micro-batches' (each micro-batch then shares its prompts within itself)."""
        if not share_prompt or distributed.sharded():
            return None
        with self._autocast():
            return PromptPass.run(model, batch, micro_batch_token_budget(self.micro_batch_tokens, batch), detach)

    def _logprobs(self, model: torch.nn.Module, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T] completion log-probs and entropies (0 at padding) in eval mode (no dropout), micro-batch by
        micro-batch."""
        was_training = model.training
        model.eval()
        batch = batch.to(self.device)
        logps = torch.zeros(batch.completion_mask.shape, device=self.device)
        entropies = torch.zeros_like(logps)
        share_prompt = shares_prompt(model)
        prompts = self._prompt_pass(model, batch, share_prompt)
        for rows, micro in self._micro_batches(batch, share_prompt):
            with self._autocast():
                logp, entropy = completion_logprobs(
                    model, micro, self.temperature, self.top_k, self.top_p,
                    share_prompt if prompts is None else prompts.select(rows),
                )
            T = micro.completion_mask.shape[1]
            for tensor, out in ((logp, logps), (entropy, entropies)):
                out[rows.to(self.device), :T] = tensor.float().masked_fill(~micro.completion_mask, 0.0)
        model.train(was_training)
        return logps, entropies

    def _autocast(self) -> torch.autocast:
        return compute_autocast(self.device, self.compute_dtype)


def _padding_batch(batch: RolloutBatch) -> RolloutBatch:
    """One completion of one token with an empty loss mask, shaped like `batch`'s rows (see _micro_batches)."""
    device = batch.input_ids.device

    def zeros_like_row(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else torch.zeros((1, 1), dtype=tensor.dtype, device=device)

    return RolloutBatch(
        input_ids=torch.full((1, 2), PAD_ID, dtype=torch.long, device=device),
        attention_mask=torch.ones((1, 2), dtype=torch.long, device=device),
        completion_mask=torch.zeros((1, 1), dtype=torch.bool, device=device),
        advantages=torch.zeros(1, device=device),
        sampler_logprobs=torch.zeros((1, 1), device=device),
        truncated=torch.zeros(1, dtype=torch.bool, device=device),
        old_logprobs=zeros_like_row(batch.old_logprobs),
        ref_logprobs=zeros_like_row(batch.ref_logprobs),
    )
