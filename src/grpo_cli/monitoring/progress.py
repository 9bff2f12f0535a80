"""Progress of a long command: a bar with ETA on a terminal, plain lines in a pipe or a log file.

    with Progress("sft", total=1000) as progress:
        for step in ...:
            progress.advance()

On a terminal it is rich's bar (done/total, elapsed, time remaining), removed when done. Elsewhere it prints
`sft: 100/1000 (10%), 12s elapsed, eta 1m48s` at each tenth of the work, so logs stay short and greppable.
"""

from __future__ import annotations

import sys
import time


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    def __init__(self, description: str, total: int, stream=None):
        self.description, self.total, self.done = description, max(int(total), 1), 0
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.printed_tenth = 0
        self.bar = None
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("eta"), TimeRemainingColumn(), console=Console(file=self.stream), transient=True,
            )
            self.task = self.bar.add_task(description, total=self.total)

    def __enter__(self) -> "Progress":
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def advance(self, count: int = 1) -> None:
        self.done = min(self.done + count, self.total)
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
            return
        tenth = self.done * 10 // self.total
        if tenth > self.printed_tenth:
            self.printed_tenth = tenth
            elapsed = time.monotonic() - self.started
            eta = elapsed / self.done * (self.total - self.done)
            print(f"{self.description}: {self.done}/{self.total} ({self.done / self.total:.0%}), "
                  f"{_duration(elapsed)} elapsed, eta {_duration(eta)}", file=self.stream, flush=True)
