"""Run untrusted Python in a subprocess with limits, and leave nothing behind.

Each run gets:
  - a fresh temporary directory as cwd, HOME and TMPDIR, removed afterwards;
  - new user, network and PID namespaces (`unshare`): no network interface but a downed loopback,
    and every process it starts dies with the namespace, even one that called setsid();
  - rlimits: CPU seconds, address space (memory_mb), processes (RLIMIT_NPROC, which Linux does not
    apply to root, so the process count is also polled and the run stopped above max_processes),
    file size (MAX_FILE_BYTES, so output cannot fill the disk), no core dumps;
  - a wall-clock limit, after which the namespace's init is killed and with it every process in it.

This contains accidents and reward-hacking programs (loops, fork bombs, huge allocations, network
calls); it is not a security boundary against a determined attacker: the program can read any file the
caller can. Use a container or VM for that.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from grpo_cli.config import SandboxConfig
from grpo_cli.errors import GrpoError

UNSHARE = ["unshare", "--user", "--net", "--pid", "--fork", "--kill-child"]
MAX_FILE_BYTES = 64 << 20
MAX_OUTPUT_CHARS = 1 << 20
POLL_S = 0.01  # how often the process count is checked while a program runs
PR_SET_PDEATHSIG = 1
LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child between fork and exec should not dlopen

Stop = Literal["wall_time", "cpu_time", "processes"]


@dataclass(frozen=True)
class RunResult:
    exit_code: int  # of the program (through unshare); meaningless when stopped is set
    stdout: str
    stopped: Stop | None  # which limit ended the run, None when the program exited by itself


def run_python(source: str, stdin: str, limits: SandboxConfig, wall_time_s: float | None = None) -> RunResult:
    """Run `source` as a Python program reading `stdin`; wall_time_s caps limits.wall_time_s."""
    wall_time_s = min(limits.wall_time_s, wall_time_s or math.inf)
    with tempfile.TemporaryDirectory(prefix="grpo-sandbox-") as workdir:
        work = Path(workdir)
        (work / "main.py").write_text(source)
        (work / "stdin.txt").write_text(stdin)
        cpu_before = _children_cpu_s()
        with open(work / "stdin.txt", "rb") as stdin_file, open(work / "stdout.txt", "wb") as stdout_file:
            process = subprocess.Popen(
                [*UNSHARE, sys.executable, "-I", "-B", "main.py"],
                cwd=work,
                stdin=stdin_file,
                stdout=stdout_file,
                stderr=subprocess.DEVNULL,
                env=_environment(work),
                start_new_session=True,
                preexec_fn=functools.partial(_limit_resources, limits),
            )
            try:
                stopped = _supervise(process, wall_time_s, limits.max_processes)
            finally:
                if process.poll() is None:
                    _stop(process)
        if stopped is None and _children_cpu_s() - cpu_before >= limits.cpu_time_s:
            stopped = "cpu_time"
        with open(work / "stdout.txt", encoding="utf-8", errors="replace") as out:
            stdout = out.read(MAX_OUTPUT_CHARS)
    return RunResult(process.returncode, stdout, stopped)


@functools.cache
def check_sandbox_available() -> None:
    """Raise GrpoError unless `unshare` can create user, network and PID namespaces here."""
    if shutil.which("unshare") is None:
        raise GrpoError("verifier.name=code needs the `unshare` command (util-linux) to isolate candidate programs")
    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise GrpoError(
            f"verifier.name=code: `{' '.join(UNSHARE)} true` failed ({probe.stderr.strip()}); the code sandbox needs "
            "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or a container run with them allowed)"
        )


def _environment(work: Path) -> dict[str, str]:
    threads = "1"  # BLAS thread pools would count against max_processes' RLIMIT_NPROC (threads are tasks)
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(work),
        "TMPDIR": str(work),
        "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }


def _limit_resources(limits: SandboxConfig) -> None:
    """Runs in the child between fork and exec; everything it starts inherits these."""
    cpu_s = math.ceil(limits.cpu_time_s)
    memory = limits.memory_mb << 20
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # If the process that supervises this run dies, take the run down with it.
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _supervise(process: subprocess.Popen, wall_time_s: float, max_processes: int) -> Stop | None:
    deadline = time.monotonic() + wall_time_s
    namespace = None
    while True:
        try:
            process.wait(timeout=max(0.0, min(POLL_S, deadline - time.monotonic())))
            return None
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() >= deadline:
            return "wall_time"
        namespace = namespace or _pid_namespace(process.pid)
        if namespace and _processes_in(namespace) > max_processes:
            return "processes"


def _pid_namespace(unshare_pid: int) -> str | None:
    """The namespace the program runs in; None until unshare has created it."""
    try:
        namespace = os.readlink(f"/proc/{unshare_pid}/ns/pid_for_children")
    except OSError:
        return None
    return None if namespace == os.readlink("/proc/self/ns/pid") else namespace


def _processes_in(namespace: str) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += os.readlink(f"/proc/{entry.name}/ns/pid") == namespace
            except OSError:  # exited meanwhile, or not ours to inspect
                pass
    return count


def _stop(process: subprocess.Popen) -> None:
    """Kill the namespace's init (the kernel then kills everything in it); unshare reaps it and exits."""
    try:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    except OSError:
        children = []
    try:
        if children:
            os.kill(int(children[0]), signal.SIGKILL)
        else:  # unshare has not forked yet (or its child is gone): kill its whole process group
            os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
