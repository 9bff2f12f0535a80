"""Run untrusted Python in a subprocess with limits, and leave nothing behind.

Each run gets:
  - a fresh temporary directory as cwd, HOME and TMPDIR, removed afterwards;
  - new network and PID namespaces (util-linux `unshare`): no network but a downed loopback, and every
    process the program starts dies with the namespace when the program ends, even one that called
    setsid() to leave the process group;
  - rlimits: CPU seconds, address space (memory_mb), processes (max_processes), file size
    (MAX_FILE_BYTES, so output cannot fill the disk), no core dumps;
  - a wall-clock limit, after which the namespace's init is killed and with it every process in it.
Linux does not apply RLIMIT_NPROC to uid 0, so under root the program runs as `nobody` (through
util-linux `setpriv`), keeping only the right to read files (the interpreter may live under /root);
concurrent runs then share the nobody process count. Other users get a user namespace instead.

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
from dataclasses import dataclass
from pathlib import Path

from grpo_cli.config import SandboxConfig
from grpo_cli.errors import GrpoError

NOBODY = 65534
AS_NOBODY = [
    "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
    "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
    "--pdeathsig=keep",  # a change of uid clears the parent-death signal that --kill-child set
]
NAMESPACES = ["unshare", "--net", "--pid", "--fork", "--kill-child"]
MAX_FILE_BYTES = 64 << 20
MAX_OUTPUT_CHARS = 1 << 20
PR_SET_PDEATHSIG = 1
LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child between fork and exec should not dlopen


@dataclass(frozen=True)
class RunResult:
    exit_code: int  # of the program; meaningless when timed_out
    stdout: str
    timed_out: bool  # stopped at the wall-clock limit (a CPU-limit kill is a non-zero exit)


def run_python(source: str, stdin: str, limits: SandboxConfig, wall_time_s: float | None = None) -> RunResult:
    """Run `source` as a Python program reading `stdin`; wall_time_s caps limits.wall_time_s."""
    wall_time_s = min(limits.wall_time_s, wall_time_s or math.inf)
    with tempfile.TemporaryDirectory(prefix="grpo-sandbox-") as workdir:
        work = Path(workdir)
        (work / "main.py").write_text(source)
        (work / "stdin.txt").write_text(stdin)
        if os.geteuid() == 0:
            os.chown(work, NOBODY, NOBODY)
        with open(work / "stdin.txt", "rb") as stdin_file, open(work / "stdout.txt", "wb") as stdout_file:
            process = subprocess.Popen(
                [*_isolation(), sys.executable, "-I", "-B", "main.py"],
                cwd=work,
                stdin=stdin_file,
                stdout=stdout_file,
                stderr=subprocess.DEVNULL,
                env=_environment(work),
                start_new_session=True,
                preexec_fn=functools.partial(_limit_resources, limits),
            )
            try:
                process.wait(timeout=wall_time_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                if process.poll() is None:
                    _stop(process)
        with open(work / "stdout.txt", encoding="utf-8", errors="replace") as out:
            stdout = out.read(MAX_OUTPUT_CHARS)
    return RunResult(process.returncode, stdout, timed_out)


@functools.cache
def check_sandbox_available() -> None:
    """Raise GrpoError unless this machine can isolate programs as run_python does."""
    for tool in ("unshare", "setpriv") if os.geteuid() == 0 else ("unshare",):
        if shutil.which(tool) is None:
            raise GrpoError(f"verifier.name=code needs the `{tool}` command (util-linux) to isolate candidate programs")
    probe = subprocess.run([*_isolation(), "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise GrpoError(
            f"verifier.name=code: `{' '.join(_isolation())} true` failed ({probe.stderr.strip()}); the code sandbox "
            "needs network and PID namespaces (as root), or unprivileged user namespaces (as another user)"
        )


def _isolation() -> list[str]:
    if os.geteuid() == 0:
        return [*NAMESPACES, *AS_NOBODY]
    return [NAMESPACES[0], "--user", *NAMESPACES[1:]]


def _environment(work: Path) -> dict[str, str]:
    threads = "1"  # BLAS thread pools would count against max_processes (RLIMIT_NPROC counts threads)
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
    # soft = hard: the program runs as its namespace's init, which ignores SIGXCPU; only SIGKILL stops it.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # If the process that supervises this run dies, take the run down with it.
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


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
