"""environment=python: the model's code runs in the code sandbox (verifier/sandbox.py: no network, the
verifier.sandbox limits, wall clock verifier.timeout_s) and the model reads what it printed, tracebacks
included. Each call is a fresh program: nothing carries over between calls."""

from __future__ import annotations

from grpo_cli.config import Config
from grpo_cli.environment.base import ToolEnvironment, ToolError, ToolFormat
from grpo_cli.verifier.sandbox import run_python

# Runs the call as cell.py with stderr sent to stdout, so the model reads its tracebacks.
RUNNER = "import sys\nsys.stderr = sys.stdout\nexec(compile(open('cell.py').read(), 'cell.py', 'exec'), {'__name__': '__main__'})\n"


class PythonEnvironment(ToolEnvironment):
    name = "python"
    parameter = "code"
    description = "Run a Python program and read what it prints (print the results you need)"

    def __init__(self, config: Config, tool_format: ToolFormat):
        super().__init__(config, tool_format)
        self.limits = config.verifier.sandbox
        self.timeout_s = config.verifier.timeout_s

    def run(self, argument: str) -> str:
        result = run_python(RUNNER, "", self.limits, wall_time_s=self.timeout_s, files={"cell.py": argument})
        if result.timed_out:
            raise ToolError(f"the program ran past {self.timeout_s:g} s and was stopped")
        if result.exit_code != 0:
            raise ToolError(result.stdout.rstrip("\n") or f"the program exited with code {result.exit_code}")
        return result.stdout.rstrip("\n") or "(no output: print what you need)"
