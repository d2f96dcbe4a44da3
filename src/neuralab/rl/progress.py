"""What an agent's run shows while it learns: a live bar in a terminal (steps, episodes, recent
return, ε, steps/s) and one line per evaluation, or the lines alone in a log file."""

from __future__ import annotations

import sys
import time

from neuralab.errors import ConfigError

REFRESH_SECONDS = 0.25  # the bar's status is rebuilt at most this often


def eval_line(row: dict, total_steps: int) -> str:
    """One evaluation's summary, as the history records it."""
    loss = f" · loss {row['loss']:.4f} · Q {row['q']:.2f}" if row.get("loss") is not None else ""
    recent = row.get("train_return")
    recent_text = f" · train return {recent:.1f}" if recent is not None else ""
    return (
        f"step {row['step']:,}/{total_steps:,} · episodes {row['episodes']:,} · eval return "
        f"{row['eval_return_mean']:.1f} ± {row['eval_return_std']:.1f}{recent_text} · "
        f"ε {row['epsilon']:.3f}{loss} · {row['steps_per_second']:,.0f} steps/s"
    )


class Progress:
    """`mode`: auto (a bar on a terminal, else plain lines), bar, plain or none."""

    def __init__(self, mode: str, total_steps: int, stream=None) -> None:
        if mode not in ("auto", "bar", "plain", "none"):
            raise ConfigError(f"progress {mode!r} is unknown; valid: auto, bar, plain, none")
        self.stream = stream or sys.stdout
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "plain"
        self.mode, self.total = mode, total_steps
        self.bar = self.task = None
        self.last_refresh = 0.0

    def start(self, done_steps: int) -> None:
        if self.mode != "bar":
            return
        from rich.progress import (  # lazily: only terminals need rich's live display
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(
            TextColumn("steps"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=True,
        )
        self.bar.start()
        self.task = self.bar.add_task("steps", total=self.total, completed=done_steps, status="")

    def update(self, steps: int, episodes: int, recent: float | None, epsilon: float,
               speed: float) -> None:  # fmt: skip
        if self.bar is None:
            return
        now = time.perf_counter()
        if now - self.last_refresh < REFRESH_SECONDS:
            return
        self.last_refresh = now
        recent_text = f"return {recent:.1f} · " if recent is not None else ""
        status = f"episodes {episodes:,} · {recent_text}ε {epsilon:.3f} · {speed:,.0f} steps/s"
        self.bar.update(self.task, completed=steps, status=status)

    def line(self, text: str) -> None:
        if self.mode == "none":
            return
        if self.bar is not None:
            self.bar.console.print(text, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
