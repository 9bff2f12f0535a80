"""Data-parallel runs under torchrun: one process per device, PyTorch's own stack (torch.distributed, FSDP2,
torch.distributed.checkpoint).

    torchrun --nproc-per-node 8 -m grpo_cli train recipe=...

`setup` reads torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK) and creates the process group (NCCL on
GPU, gloo on CPU) with train.dist_timeout_s, so a dead rank ends the others with an error instead of a hang.
Under torchrun that holds for one process too (`--nproc-per-node 1`: FSDP2 on one GPU, as with eight).
Without torchrun every helper here is the identity of a one-process run (`world().size == 1`).

The split of work (trainer.py, learner.py):
- train.prompts_per_step is global; rank r takes prompts [r * n, (r + 1) * n), n = prompts_per_step / size,
  and generates their whole groups with its own sampler. Rewards are gathered, so advantages, group
  statistics and completion metrics are computed on the global batch exactly as in one process.
- The learner's policy (and a full fine-tuning reference) is sharded with `fully_shard` per decoder layer
  and at the root. Gradients are summed, not averaged, across ranks: every rank's loss is its share of the
  global loss because the loss normalizers (BatchTotals) are all-reduced first.
- Every rank keeps an unsharded copy of the policy for its sampler (`Learner.full_model`), refreshed from
  the shards one tensor at a time after each update.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from grpo_cli.errors import ConfigError, GrpoError


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place in the run: from the process group when there is one, else a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size())
    return World()


def launched_by_torchrun() -> bool:
    """Whether this process is one of several ranks, or torchrun started it alone (it sets TORCHELASTIC_RUN_ID)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or (dist.is_available() and dist.is_torchelastic_launched())


def sharded() -> bool:
    """Whether the learner shards its models with FSDP2: under torchrun's process group, whatever its size. Not
    any process group: a vLLM engine started in this process creates a one-rank group of its own."""
    return launched_by_torchrun() and dist.is_available() and dist.is_initialized()


def setup(config) -> World:
    """Check the config against the world size and create the process group (torchrun only).

    Raises ConfigError when train.prompts_per_step does not divide by the world size.
    """
    if not launched_by_torchrun() or dist.is_initialized():
        return world()
    size = int(os.environ["WORLD_SIZE"])
    if config.train.prompts_per_step % size:
        raise ConfigError(
            f"train.prompts_per_step={config.train.prompts_per_step} must divide by the world size {size} "
            "(every rank takes the same share of prompts); use a multiple of it"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = config.model.device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend="nccl" if cuda else "gloo",
        timeout=datetime.timedelta(seconds=config.train.dist_timeout_s),
        device_id=torch.device("cuda", local_rank) if cuda else None,
    )
    return world()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def running(config) -> Iterator[World]:
    """The process group for the duration of a command. Under torchrun each rank that fails prints its error
    once, as one line naming the rank; a rank that loses a peer (dead, or silent past train.dist_timeout_s)
    ends with an error too, instead of hanging."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    try:
        yield setup(config)
    except GrpoError as exc:
        if size > 1:
            raise type(exc)(f"rank {rank}: {exc}") from None
        raise
    except (dist.DistError, RuntimeError) as exc:
        if size == 1 or not _lost_a_peer(exc):
            raise
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GrpoError(
            f"rank {rank}: another rank failed or did not answer within train.dist_timeout_s="
            f"{config.train.dist_timeout_s:g}s ({first_line})"
        ) from None
    finally:
        shutdown()


def _lost_a_peer(exc: BaseException) -> bool:
    """A collective failed because another rank died or went silent (gloo raises plain RuntimeErrors)."""
    return isinstance(exc, dist.DistError) or re.search(r"gloo|nccl|connection|timed out|timeout", str(exc), re.I) is not None


def barrier() -> None:
    if world().size > 1:
        dist.barrier()


def share(items, current: World | None = None):
    """This rank's contiguous share of `items` (a list or tensor): equal shares, the first len % size ranks
    one item more when the length does not divide."""
    current = current or world()
    base, extra = divmod(len(items), current.size)
    start = current.rank * base + min(current.rank, extra)
    return items[start : start + base + (current.rank < extra)]


def gather(items: list) -> list:
    """Every rank's `items` concatenated in rank order, on every rank (picklable objects)."""
    if world().size == 1:
        return list(items)
    parts: list = [None] * world().size
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """Element-wise sum, min or max of `values` over ranks (float64)."""
    if world().size == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return tensor.tolist()


def global_totals(totals):
    """The global batch's loss normalizers (algo/loss.py BatchTotals): the counts (`num_*` fields) summed over
    ranks, `max_*` fields maxed, constants (the generation budget) as they are."""
    if world().size == 1:
        return totals
    fields = dataclasses.asdict(totals)
    summed = [key for key in fields if key.startswith("num_")]
    maxed = [key for key in fields if key.startswith("max_")]
    values = dict(zip(summed, all_reduce([fields[key] for key in summed]))) | dict(
        zip(maxed, all_reduce([fields[key] for key in maxed], "max"))
    )
    return type(totals)(**{key: type(fields[key])(values.get(key, fields[key])) for key in fields})


def reduce_metrics(metrics: dict[str, float], ops: dict[str, str]) -> dict[str, float]:
    """Combine per-rank metrics: ops[key] is "sum" (shares of a global value), "min" or "max"; keys not in
    ops are summed."""
    if world().size == 1:
        return metrics
    keys = sorted(metrics)
    reduced = {}
    for op in ("sum", "min", "max"):
        selected = [key for key in keys if ops.get(key, "sum") == op]
        reduced |= dict(zip(selected, all_reduce([metrics[key] for key in selected], op)))
    return {key: reduced[key] for key in metrics}


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# --- the learner's model under FSDP2 -------------------------------------------------------------------------


def shard(model: torch.nn.Module, device: torch.device, trains: bool = True) -> torch.nn.Module:
    """`fully_shard` every decoder layer (the model's `_no_split_modules`) and then the root, in place.

    On GPU a model that `trains` is first cast to float32, so its shards and the optimizer state are float32
    master weights (small updates are not rounded away); forward and backward compute in bf16 and gradients
    are reduced in fp32 (MixedPrecisionPolicy). On CPU everything stays in the model's dtype. Gradients are
    summed over ranks (divide factor 1): each rank's loss is its share of the global batch loss already.
    """
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layer_types = set(getattr(base, "_no_split_modules", None) or [])
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if device.type == "cuda" else MixedPrecisionPolicy()
    if device.type == "cuda" and trains:
        model.to(torch.float32)
    for module in model.modules():
        if type(module).__name__ in layer_types:
            fully_shard(module, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # plain SUM: gloo has no PREMUL_SUM
    return model


def reshard(model: torch.nn.Module) -> None:
    """Put `model`'s sharded parameters back in place. FSDP2 leaves the root module's parameters unsharded after
    a forward pass (it expects the backward pass next); after a forward without one (eval, retention) the
    optimizer's parameters would not be the model's and its state could not be named."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded (DTensor) parameter or gradient norm gathered whole; a plain tensor as it is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


@torch.no_grad()
def copy_into(full_model: torch.nn.Module, sharded: torch.nn.Module) -> None:
    """Overwrite `full_model`'s parameters with the gathered shards of `sharded` (same names), one tensor at a
    time: the extra memory is one full parameter."""
    targets = dict(full_model.named_parameters())
    for name, param in sharded.named_parameters():
        targets[name].copy_(full_tensor(param.data))


@torch.no_grad()
def scatter_from(sharded: torch.nn.Module, full_model: torch.nn.Module) -> None:
    """Overwrite the shards of `sharded` with this rank's part of `full_model`'s parameters (every rank holds
    the same full model, so nothing travels)."""
    from torch.distributed.tensor import distribute_tensor

    sources = dict(full_model.named_parameters())
    for name, param in sharded.named_parameters():
        source = sources[name].detach().to(param.device, param.dtype)
        if hasattr(param, "device_mesh"):
            source = distribute_tensor(source, param.device_mesh, param.placements)
        param.copy_(source)


# --- checkpoints: optimizer state with torch.distributed.checkpoint -------------------------------------------


def save_sharded(state: dict[str, Any], directory) -> None:
    """Write `state` (tensors, DTensors) with torch.distributed.checkpoint: each rank writes its own shards, in
    parallel; a one-process run writes one file."""
    import warnings

    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(state, checkpoint_id=str(directory))


def load_sharded(template: dict[str, Any], directory) -> dict[str, Any]:
    """Fill `template` (the state of this world size: its shapes and shards) from `directory`, whatever world
    size wrote it."""
    import warnings

    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(template, checkpoint_id=str(directory))
    return template
