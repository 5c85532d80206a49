"""Terminal output: logs and progress go to stderr, so stdout carries only results (``--json``)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, highlight=False)


def stdout_console() -> Console:
    """Tables on stdout; wide enough not to truncate when piped to a file or CI log."""
    c = Console(highlight=False)
    return c if c.is_terminal else Console(highlight=False, width=160)


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
