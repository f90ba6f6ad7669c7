"""`fakeproc demo`'s command lines: printed so that they can be pasted into a shell."""
from __future__ import annotations

import io
import shlex

from rich.console import Console

from fakeproc.demo import _run


def test_a_command_line_is_printed_shell_quoted():
    out = io.StringIO()
    argv = ["sh", "-c", "echo \"it's\" && echo 'o'k"]
    assert _run(Console(file=out, width=200, soft_wrap=True), "title", argv)
    printed = next(line for line in out.getvalue().splitlines() if line.startswith("$ "))
    assert printed == f"$ {shlex.join(argv)}"
    assert shlex.split(printed[2:]) == argv
    assert out.getvalue().splitlines()[-2:] == ["it's", "ok"]
