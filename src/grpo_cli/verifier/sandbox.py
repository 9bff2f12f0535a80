"""Run untrusted Python in a subprocess with limits, and leave nothing behind.

Each run is a bubblewrap (`bwrap`) container:
  - its filesystem holds only /usr (read-only), the Python installation (read-only, at /python: the standard
    library and that installation's site-packages, not the project's venv) and a fresh scratch folder
    (/sandbox: cwd, HOME and TMPDIR; removed afterwards). The project, the tests, home folders and /etc are
    not there to read; stdin and stdout are files the caller opened outside the scratch folder;
  - new network, PID, IPC and UTS namespaces: no network but a downed loopback, and every process the
    program starts dies with the namespace's init when the program ends, even one that called setsid();
  - rlimits: CPU seconds, address space (memory_mb), processes (max_processes), file size
    (MAX_FILE_BYTES, so output cannot fill the disk), no core dumps;
  - a wall-clock limit, after which bwrap is killed and with it every process in the container.
Linux does not apply RLIMIT_NPROC to uid 0, so under root the program runs as `nobody` (util-linux
`setpriv` inside the container, with no capabilities and no_new_privs); concurrent runs then share the
nobody process count. Other users get a user namespace from bwrap instead.

What it does not stop: the program spends the CPU, memory and time it is given, and it can read /usr and
the Python installation. A kernel exploit escapes any namespace: use a VM for code you must not run at all.
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
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--bounding-set=-all", "--no-new-privs"]
NAMESPACES = ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
SCRATCH = "/sandbox"
MAX_FILE_BYTES = 64 << 20
MAX_OUTPUT_CHARS = 1 << 20
PR_SET_PDEATHSIG = 1
LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child between fork and exec should not dlopen


@dataclass(frozen=True)
class RunResult:
    exit_code: int  # of the program; meaningless when timed_out
    stdout: str
    timed_out: bool  # stopped at the wall-clock limit (a CPU-limit kill is a non-zero exit)


def run_python(source: str, stdin: str, limits: SandboxConfig, wall_time_s: float | None = None, files: dict[str, str] | None = None) -> RunResult:
    """Run `source` as a Python program reading `stdin`; wall_time_s caps limits.wall_time_s.

    Args:
        files: more files to put beside the program in its scratch folder (name -> text).
    """
    wall_time_s = min(limits.wall_time_s, wall_time_s or math.inf)
    with tempfile.TemporaryDirectory(prefix="grpo-sandbox-") as run_dir:
        work = Path(run_dir) / "work"
        work.mkdir()
        for name, text in {**(files or {}), "main.py": source}.items():
            (work / name).write_text(text)
        (Path(run_dir) / "stdin.txt").write_text(stdin)
        if os.geteuid() == 0:
            os.chown(work, NOBODY, NOBODY)
        with open(Path(run_dir) / "stdin.txt", "rb") as stdin_file, open(Path(run_dir) / "stdout.txt", "wb+") as stdout_file:
            process = subprocess.Popen(
                [*_container(work), str(_python()[1]), "-I", "-B", "main.py"],
                stdin=stdin_file,
                stdout=stdout_file,
                stderr=subprocess.DEVNULL,
                env={},
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
            stdout_file.seek(0)
            stdout = stdout_file.read(MAX_OUTPUT_CHARS).decode("utf-8", errors="replace")
    return RunResult(process.returncode, stdout, timed_out)


@functools.cache
def check_sandbox_available() -> None:
    """Raise GrpoError unless this machine can isolate programs as run_python does."""
    tools = ("bwrap", "setpriv") if os.geteuid() == 0 else ("bwrap",)
    for tool in tools:
        if shutil.which(tool) is None:
            package = "bubblewrap" if tool == "bwrap" else "util-linux"
            raise GrpoError(f"verifier.name=code needs the `{tool}` command to isolate candidate programs: apt-get install {package}")
    with tempfile.TemporaryDirectory(prefix="grpo-sandbox-") as work:
        if os.geteuid() == 0:
            os.chown(work, NOBODY, NOBODY)
        probe = subprocess.run([*_container(Path(work)), str(_python()[1]), "-I", "-c", "pass"], capture_output=True, text=True, env={})
    if probe.returncode != 0:
        raise GrpoError(
            f"verifier.name=code: the bubblewrap sandbox does not start ({probe.stderr.strip()}); it needs mount, "
            "network and PID namespaces (as root), or unprivileged user namespaces (as another user)"
        )


def _container(work: Path) -> list[str]:
    """The bwrap command line up to the program: what the container sees, its namespaces and its user."""
    command = ["bwrap", *NAMESPACES, "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):  # merged-/usr links, or real folders
        if os.path.islink(top):
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    command += ["--ro-bind", str(_python()[0]), "/python", "--proc", "/proc", "--dev", "/dev"]
    command += ["--bind", str(work), SCRATCH, "--chdir", SCRATCH, "--clearenv"]
    for name, value in _environment().items():
        command += ["--setenv", name, value]
    if os.geteuid() == 0:
        return [*command, "--", *AS_NOBODY]
    return [*command, "--unshare-user", "--"]


@functools.cache
def _python() -> tuple[Path, Path]:
    """(the Python installation that runs this code, a venv's base; its interpreter inside the container, where
    the installation is mounted at /python so that no path reveals the host's layout)."""
    executable = Path(os.path.realpath(sys._base_executable))
    home = Path(os.path.realpath(sys.base_prefix))
    if not executable.is_relative_to(home):  # an interpreter linked in from elsewhere: mount its own prefix
        home = executable.parent.parent
    return home, Path("/python") / executable.relative_to(home)


def _environment() -> dict[str, str]:
    threads = "1"  # BLAS thread pools would count against max_processes (RLIMIT_NPROC counts threads)
    return {
        "PATH": "/python/bin:/usr/bin:/bin",
        "LD_LIBRARY_PATH": "/python/lib",  # a libpython linked by an absolute path that is not mounted
        "HOME": SCRATCH,
        "TMPDIR": SCRATCH,
        "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }


def _limit_resources(limits: SandboxConfig) -> None:
    """Runs in the child between fork and exec; everything it starts inherits these."""
    cpu_s = math.ceil(limits.cpu_time_s)
    memory = limits.memory_mb << 20
    # soft = hard: SIGXCPU could be caught; only SIGKILL surely stops the program.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # If the process that supervises this run dies, take the run down with it.
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _stop(process: subprocess.Popen) -> None:
    """Kill bwrap: its init in the PID namespace dies with it (--die-with-parent), and with that init every
    process of the run. A process that called setsid() is out of the group but not out of the namespace."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
