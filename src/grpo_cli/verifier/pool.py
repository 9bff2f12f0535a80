"""Worker processes that score completions, each check bounded in wall-clock time.

Two limits stop a slow check:
  - soft, in the worker: SIGALRM after timeout_s raises CheckTimeout inside Python code (a slow sympy
    simplification); the worker answers "timeout" and carries on;
  - hard, in the parent: at HARD_LIMIT x timeout_s the worker is killed and replaced. This is the only
    way out of C code that never returns to the interpreter: GMP's integer power when sympy runs on
    gmpy2, a C loop in a user's reward function.
A task may bring its own limit in place of timeout_s (map's timeouts_s: a reward function called on a whole
batch of completions gets timeout_s per completion).
A worker that dies for any other reason (a segfault, the OOM killer) is replaced the same way; its
check scores 0 with reason "error". The code verifier runs without the soft limit: its sandbox bounds
each program itself, and an exception inside subprocess handling could leave a program running.
Workers come from a forkserver that has already imported the verifier, so a replacement is ready in
milliseconds and inherits no threads or CUDA state of the trainer; each runs one torch/OpenMP thread.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import signal
import sys
import time
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

from grpo_cli.verifier.score import Score

HARD_LIMIT = 1.5
READY = "ready"


class CheckTimeout(BaseException):
    """Raised by SIGALRM; a BaseException so that `except Exception` in sympy or math-verify cannot swallow it."""


def _raise_timeout(signum, frame):
    raise CheckTimeout


def _serve(conn: Connection, score_one: Callable, soft_timeout: bool, failed: Callable[[str], Any]) -> None:
    """Worker loop: receive (time limit, task tuple), answer score_one's result, until the parent sends None or
    goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # One thread each for torch (a user's reward may import it) and BLAS: the workers wait most of the time
    # and must not take cores from the sampler and the learner when they do run.
    os.environ.update({name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    signal.signal(signal.SIGALRM, _raise_timeout)
    conn.send(READY)
    while (message := conn.recv()) is not None:
        timeout_s, task = message
        try:
            try:
                if soft_timeout:
                    signal.setitimer(signal.ITIMER_REAL, timeout_s)
                score = score_one(*task)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except CheckTimeout:
            score = failed("timeout")
        except Exception:
            score = failed("error")
        conn.send(score)


class _Worker:
    def __init__(self, context, score_one, soft_timeout: bool, failed: Callable[[str], Any]):
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(target=_serve, args=(child_conn, score_one, soft_timeout, failed), daemon=True)
        self.process.start()
        child_conn.close()
        self.ready = False

    def wait_ready(self) -> None:
        try:
            self.conn.recv()  # READY
        except EOFError:
            raise RuntimeError(
                "a verifier worker exited while starting (see its error above); a script that builds a verifier "
                "must do so under `if __name__ == '__main__':`, as workers re-import the main module"
            ) from None
        self.ready = True

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


class WorkerPool:
    """`map(tasks)` runs score_one(*task) for every task on num_workers processes; results in task order, and
    each task's latency (seconds from sending it to a worker to its answer, a kill or a crash) in `latencies_s`.
    A task that times out or crashes answers failed("timeout") or failed("error") (the verifier's: a failed Score)."""

    def __init__(
        self, score_one: Callable, num_workers: int, timeout_s: float, soft_timeout: bool, preload: list[str],
        failed: Callable[[str], Any] = Score.failed,
    ):
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(preload)
        self.score_one, self.timeout_s, self.soft_timeout, self.failed = score_one, timeout_s, soft_timeout, failed
        self.latencies_s: list[float] = []
        self.workers = [self._spawn() for _ in range(num_workers)]
        for worker in self.workers:
            worker.wait_ready()

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self.workers]

    def map(self, tasks: list[tuple], timeouts_s: list[float] | None = None) -> list:
        """timeouts_s: each task's limit in place of timeout_s."""
        results: list = [None] * len(tasks)
        self.latencies_s = [0.0] * len(tasks)
        limits = timeouts_s or [self.timeout_s] * len(tasks)
        queue = collections.deque(range(len(tasks)))
        # worker -> (task index, time.monotonic() when sent, when it is killed)
        running: dict[_Worker, tuple[int, float, float]] = {}
        while queue or running:
            self._dispatch(tasks, limits, queue, running)
            self._collect(results, running)
            self._kill_overdue(results, running)
        return results

    def _finish(self, results: list, running: dict, worker: _Worker, score: Score) -> None:
        index, sent, _ = running.pop(worker)
        results[index] = score
        self.latencies_s[index] = time.monotonic() - sent

    def _dispatch(self, tasks: list[tuple], limits: list[float], queue: collections.deque, running: dict) -> None:
        idle = [worker for worker in self.workers if worker.ready and worker not in running]
        for worker in idle[: len(queue)]:
            index = queue.popleft()
            try:
                worker.conn.send((limits[index], tasks[index]))
            except OSError:  # the worker died while idle: not this task's fault, so it runs elsewhere
                queue.appendleft(index)
                self._replace(worker)
                continue
            sent = time.monotonic()
            running[worker] = (index, sent, sent + HARD_LIMIT * limits[index])

    def _collect(self, results: list, running: dict) -> None:
        """Wait for the next answer (or a replacement worker's READY), at most until the first deadline."""
        waiting = list(running) + [worker for worker in self.workers if not worker.ready]
        deadline = min((kill_at for _, _, kill_at in running.values()), default=None)
        for conn in wait([worker.conn for worker in waiting], None if deadline is None else max(0.0, deadline - time.monotonic())):
            worker = next(worker for worker in waiting if worker.conn is conn)
            try:
                message = conn.recv()
            except (EOFError, OSError):  # it crashed: a segfault, the OOM killer, a kill from outside
                if worker in running:
                    self._finish(results, running, worker, self.failed("error"))
                self._replace(worker)
                continue
            if message == READY:
                worker.ready = True
            else:
                self._finish(results, running, worker, message)

    def _kill_overdue(self, results: list, running: dict) -> None:
        now = time.monotonic()
        for worker, (_, _, kill_at) in list(running.items()):
            if now >= kill_at:
                self._finish(results, running, worker, self.failed("timeout"))
                self._replace(worker)

    def _spawn(self) -> _Worker:
        return _Worker(self.context, self.score_one, self.soft_timeout, self.failed)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self.workers[self.workers.index(worker)] = self._spawn()

    def close(self) -> None:
        for worker in self.workers:
            try:
                worker.conn.send(None)
            except OSError:
                pass
        for worker in self.workers:
            worker.process.join(timeout=1)
            if worker.process.is_alive():
                worker.kill()
        self.workers = []
