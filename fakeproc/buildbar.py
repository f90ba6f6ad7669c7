"""A rich progress bar for long machine builds (a 1 TiB machine takes a while).

Small machines build in well under a second: the bar appears only when the
build has at least BAR_PAGES pages to set up, and it writes to stderr so the
summary on stdout stays machine-readable. rich is imported only then: start-up
of a small machine should not pay for it.
"""
from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

BAR_PAGES = 1 << 22  # 16 GiB of 4 KiB pages


class BuildBar:
    """A context manager whose instance is a machine.Progress callback."""

    def __init__(self, console: "Console | None" = None, min_pages: int = BAR_PAGES) -> None:
        self.console = console
        self.min_pages = min_pages
        self._bar: Any = None
        self._task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if total < self.min_pages:
            return
        if self._bar is None:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)
            self._bar = Progress(TextColumn("building the machine"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("pages"), TimeElapsedColumn(),
                                 console=self.console or Console(stderr=True))
            self._bar.start()
            self._task = self._bar.add_task("build", total=total)
        self._bar.update(self._task, completed=done)

    def __enter__(self) -> BuildBar:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
