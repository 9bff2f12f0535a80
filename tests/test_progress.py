"""Progress: rich's bar with ETA on a terminal, a plain line per tenth of the work in a pipe."""

import io
import json
import subprocess

from conftest import GRPO
from grpo_cli.monitoring.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_pipe_gets_one_plain_line_per_tenth():
    pipe = io.StringIO()
    with Progress("sft", total=20, stream=pipe) as progress:
        for _ in range(20):
            progress.advance()
    lines = pipe.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("sft: 2/20 (10%), ") and " elapsed, eta " in lines[0]
    assert lines[-1].startswith("sft: 20/20 (100%), ") and lines[-1].endswith("eta 0s")
    assert "\x1b" not in pipe.getvalue()  # no terminal control codes in a log


def test_a_terminal_gets_a_bar_with_eta():
    terminal = Terminal()
    with Progress("merge", total=4, stream=terminal) as progress:
        for _ in range(4):
            progress.advance()
    text = terminal.getvalue()
    assert "merge" in text and "4/4" in text and "eta" in text and "\x1b" in text


def test_grpo_verify_reports_progress_in_a_pipe(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"completion": f"FINAL: {i}", "answer": str(i % 7)}) + "\n" for i in range(600)))
    result = subprocess.run([GRPO, "verify", str(rows), "recipe=demo", "verifier.num_workers=1"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("verify: ")]
    # Chunks of 256 rows: 256 (43%), 512 (85%), 600 (100%).
    assert [line.split(",")[0] for line in progress] == ["verify: 256/600 (43%)", "verify: 512/600 (85%)",
                                                         "verify: 600/600 (100%)"]
    scores = [json.loads(line) for line in result.stdout.splitlines()]
    assert sum(s["correct"] for s in scores) == len([i for i in range(600) if i == i % 7])
