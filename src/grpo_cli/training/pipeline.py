"""`train.async_steps=1`: one-step-off-policy pipelining. The sampler generates step k+1 while the learner
trains on step k.

    learner process (trainer.train)                     sampler process (spawned here)
    rollouts(k): ask for step k+1 at version v  ---->   collect_rollouts(k+1) with the weights of version v
                 wait for step k's rollouts     <----   step k's rollouts (sampled at the version asked for)
    learn_from(k): the update, sync_weights     ---->   shared weights buffer, now version v + 1
    run_eval: generate(...) at version v + 1    ---->   sampler.generate with the weights of version v + 1

The sampler process holds its own copy of the model and its own sampler (sampler.build_sampler: HF or vLLM)
and verifier: it runs rollout.collect_rollouts, sampling and verification, as the synchronous loop does.

Versions count the learner's weight pushes (the steps whose update changed the policy). Every request is served
with the weights of exactly the version current when it was made: step k+1's batch, asked for once step k-1 has
pushed, is trained at step k+1 after at most one more push, so `async/staleness` (learner version minus the
batch's) is 0 or 1, and which one never depends on timing. Evals and preflight ask after the push: they sample
the current policy. The weights travel through one shared-memory (CPU) copy of the model in model.dtype, written
under a lock; with LoRA it holds the merged weights (models.checkpoint_weights). Before overwriting it with
version v + 1 the learner waits until the sampler process has loaded version v for the request that needs it
(it does so as soon as it has delivered the batch before, so the wait is about 0).

The loss: step k+1's batch was sampled by the policy before step k's update. The learner's policy when step
k+1 starts is pi_old of the ratio, and the sampler's log-probs are the behaviour policy, corrected by the
truncated importance weight min(pi_old / pi_sampler, algorithm.tis_cap) (algo/loss.py), which config.py
therefore requires with async_steps=1.

Devices: on CPU the torch threads are split, half to the sampler process (at least one), the rest to the
learner; on GPU the sampler process takes the GPU after the learners' (cuda:1 beside a one-process learner on
cuda:0, cuda:N+r beside N torchrun ranks per node) when the machine has it, else it shares the learner's.

torchrun: every rank has its own sampler process, and the sampler processes form their own gloo process group
(through torchrun's store), so collect_rollouts' shares, gathers and dynamic-sampling rounds are exactly those
of the synchronous run.

Lifetime: close() (the trainer's ExitStack: the run's end, an error, Ctrl-C) stops the process and waits for
it; the sampler process ignores SIGINT (the learner's to handle) and ends by itself when the learner process
is gone. A batch in flight at a checkpoint is not saved: a resumed run samples it again, from the checkpoint's
weights (so the first step after a resume has staleness 0).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import queue
import signal
import time
import traceback
from contextlib import ExitStack, closing
from typing import Callable

import torch
import torch.multiprocessing as mp

from grpo_cli.errors import GrpoError
from grpo_cli.models import checkpoint_weights, load_pretrained, load_tokenizer, resolve_device, resolve_dtype
from grpo_cli.training import distributed

# How often a process waiting on the other checks that it is still alive, seconds.
POLL_S = 0.5
# How long close() lets the sampler process finish its work and free its engine before killing it, seconds.
STOP_TIMEOUT_S = 30.0


class RolloutPipeline:
    """The trainer's sampler under train.async_steps=1: `rollouts(step)` for the training steps, and the
    Sampler interface (sampler/base.py: generate, sync_weights, close) for evals, preflight and weight pushes,
    all served by the sampler process."""

    def __init__(self, config, model, train_examples: list, schedule, prompts: Callable[[int], list], last_step: int):
        """model: learner.full_model, the policy now (version 0 of the run's pushes); train_examples and
        schedule: for dynamic sampling's extra rounds (schedule.resampler); prompts(step): the examples of
        training step `step`; last_step: no rollouts are asked for beyond it."""
        context = mp.get_context("spawn")
        self.prompts, self.last_step = prompts, last_step
        self.version = 0  # weight pushes so far
        self.requested_version = 0  # the version the newest request samples with
        self.requested: set[int] = set()  # training steps asked for
        self.outstanding = 0  # requests not answered yet
        self.delivered: dict[tuple, object] = {}  # answers read while waiting for another
        device = sampler_device(config.model.device)
        dtype = resolve_dtype(config.model.dtype, device)
        self.buffer = {name: tensor.detach().to("cpu", dtype).clone().share_memory_() for name, tensor in checkpoint_weights(model)}
        self.lock = context.Lock()
        self.buffer_version = context.Value("q", 0, lock=False)  # written under self.lock
        self.loaded_version = context.Value("q", -1, lock=False)  # written by the sampler process only
        self.learner_threads = torch.get_num_threads()
        sampler_threads = max(1, self.learner_threads // 2)
        if device.type == "cpu":
            torch.set_num_threads(max(1, self.learner_threads - sampler_threads))
        world = distributed.world()
        self.requests, self.results = context.Queue(), context.Queue()
        self.process = context.Process(
            target=serve,
            args=(config, self.buffer, self.lock, self.buffer_version, self.loaded_version, self.requests, self.results,
                  train_examples, schedule, str(device), sampler_threads, (world.rank, world.size)),
            name="grpo-sampler",
        )
        self.process.start()
        self.context_length = self._wait_for(("ready",))  # the Sampler interface's, for multi-turn evals

    def rollouts(self, step: int):
        """Step `step`'s rollouts (rollout.Rollouts), and step + 1's asked for, to be sampled while the learner
        trains on these. Returns (rollouts, metrics): the rollouts' timings are the learner's wait for them
        (time/wait_s); metrics hold async/staleness and the sampler process's seconds sampling and verifying
        them (async/sample_s, async/verify_s; the slowest rank's)."""
        for wanted in (step, step + 1):
            if wanted <= self.last_step and wanted not in self.requested:
                self.requested.add(wanted)
                self._request("collect", wanted, self.prompts(wanted))
        tic = time.perf_counter()
        rollouts, version = self._wait_for(("rollouts", step))
        wait_s = time.perf_counter() - tic
        busy = distributed.reduce_metrics(
            {"async/sample_s": rollouts.timings["time/sample_s"], "async/verify_s": rollouts.timings["time/verify_s"]},
            {"async/sample_s": "max", "async/verify_s": "max"},
        )
        return dataclasses.replace(rollouts, timings={"time/wait_s": wait_s}), {"async/staleness": self.version - version, **busy}

    def generate(self, prompt_ids: list[list[int]], n: int, seed: int, temperature: float | None = None, stop=(),
                 on_groups=None):
        """The Sampler interface's generate, with the policy as of the latest push (evals, preflight). The groups
        come back at once, so `on_groups` is never called (callers verify what it did not hand over)."""
        self._request("generate", prompt_ids, n, seed, temperature, tuple(stop))
        return self._wait_for(("generated",))

    @torch.no_grad()
    def sync_weights(self, model) -> None:
        """Push `model`'s weights (learner.full_model after an update): the next request samples them."""
        self._until(lambda: self.loaded_version.value >= self.requested_version)
        with self.lock:
            for name, tensor in checkpoint_weights(model):
                self.buffer[name].copy_(tensor)
            self.version += 1
            self.buffer_version.value = self.version

    def close(self) -> None:
        """Stop the sampler process: let it finish and free its engine, or kill it when it is busy with work
        nobody will read (after an error, Ctrl-C) or does not stop in STOP_TIMEOUT_S."""
        if self.process.is_alive():
            self.requests.put(None)
            self.process.join(STOP_TIMEOUT_S if not self.outstanding else 0)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(STOP_TIMEOUT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        for channel in (self.requests, self.results):
            channel.cancel_join_thread()  # nothing left to deliver to a process that is gone
            channel.close()
        torch.set_num_threads(self.learner_threads)
        self.buffer.clear()  # the shared copy of the model goes now, not when the trainer lets go of this object

    def _request(self, kind: str, *args) -> None:
        self.requested_version = self.version
        self.outstanding += 1
        self.requests.put((kind, args, self.version))

    def _wait_for(self, key: tuple):
        while key not in self.delivered:
            try:
                answer_key, answer = self.results.get(timeout=POLL_S)
            except queue.Empty:
                self._check_alive()
                continue
            if answer_key == ("error",):
                raise GrpoError(f"the sampler process (train.async_steps=1) failed: {answer}")
            self.delivered[answer_key] = answer
        if key != ("ready",):
            self.outstanding -= 1
        return self.delivered.pop(key)

    def _until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self._check_alive()
            time.sleep(0.005)

    def _check_alive(self) -> None:
        if not self.process.is_alive():
            try:  # it may have said why before exiting
                answer_key, answer = self.results.get(timeout=POLL_S)
            except queue.Empty:
                answer_key, answer = None, None
            reason = answer if answer_key == ("error",) else f"exit code {self.process.exitcode}"
            raise GrpoError(f"the sampler process (train.async_steps=1) ended: {reason}")


def sampler_device(model_device: str) -> torch.device:
    """Where the sampler process runs (see the module docstring): CPU beside a CPU learner; on GPU the one after
    the learners' of this node when there is one, else the learner's."""
    device = resolve_device(model_device)
    if device.type == "cpu":
        return device
    local_rank, local_size = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return torch.device("cuda", local_size + local_rank if torch.cuda.device_count() >= 2 * local_size else local_rank)


def serve(config, buffer, lock, buffer_version, loaded_version, requests, results, train_examples, schedule, device,
          threads, world) -> None:
    """The sampler process: load the model and build the sampler and verifier, then answer requests in order
    until None arrives or the learner process is gone. An error is sent back as one line."""
    from grpo_cli.environment import open_environments
    from grpo_cli.sampler import build_sampler
    from grpo_cli.training.rollout import collect_rollouts
    from grpo_cli.training.schedule import resampler
    from grpo_cli.verifier import build_verifier

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the learner process's to handle
    device = torch.device(device)
    if device.type == "cuda":
        # Before CUDA starts in this process: the engine (vLLM too) sees its one GPU as cuda:0.
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        os.environ["CUDA_VISIBLE_DEVICES"] = visible.split(",")[device.index] if visible else str(device.index)
        os.environ["LOCAL_RANK"] = "0"  # under torchrun vLLM takes its device from it (sampler/vllm.py)
        device = torch.device("cuda", 0)
    else:
        torch.set_num_threads(threads)
    try:
        with ExitStack() as stack:
            rank, size = world
            if size > 1:
                _join_sampler_group(rank, size, config.train.dist_timeout_s)
                stack.callback(distributed.shutdown)
            tokenizer = load_tokenizer(config.model.name_or_path)
            model = load_pretrained(config.model.name_or_path, resolve_dtype(config.model.dtype, device)).to(device).eval()

            def load(version: int) -> None:
                with lock:
                    if buffer_version.value != version:
                        raise GrpoError(f"weights of version {version} asked for, the buffer holds {buffer_version.value}")
                    model.load_state_dict(buffer, strict=True)
                loaded_version.value = version

            load(0)
            sampler = stack.enter_context(closing(build_sampler(config, model, tokenizer)))
            verifier = stack.enter_context(build_verifier(config.verifier))
            environments = stack.enter_context(open_environments(config, tokenizer))
            results.put((("ready",), sampler.context_length))
            while (request := _next(requests)) is not None:
                kind, args, version = request
                if version != loaded_version.value:
                    load(version)
                    sampler.sync_weights(model)
                if kind == "collect":
                    step, examples = args
                    resample = resampler(schedule, train_examples, step)
                    rollouts = collect_rollouts(config, step, examples, tokenizer, sampler, verifier, resample, environments)
                    results.put((("rollouts", step), (rollouts, version)))
                else:
                    prompt_ids, n, seed, temperature, stop = args
                    results.put((("generated",), sampler.generate(prompt_ids, n, seed, temperature, stop=stop)))
    except Exception as exc:
        if not isinstance(exc, GrpoError):
            traceback.print_exc()
        first_line = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        results.put((("error",), first_line))
        raise SystemExit(1) from None


def _next(requests):
    """The next request; None when told to stop or when the learner process is gone."""
    while True:
        try:
            return requests.get(timeout=POLL_S)
        except queue.Empty:
            if not mp.parent_process().is_alive():
                return None


def _join_sampler_group(rank: int, size: int, timeout_s: float) -> None:
    """torchrun: the sampler processes' own gloo process group, met through the store torchrun's ranks use
    (MASTER_ADDR:MASTER_PORT) under a prefix of their own, so collect_rollouts' gathers run among them."""
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=timeout_s)
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout)
    dist.init_process_group("gloo", store=dist.PrefixStore("grpo-sampler", store), rank=rank, world_size=size, timeout=timeout)
