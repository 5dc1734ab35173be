"""What every command module shares: how a command fails."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code`` (2: a usage or input error).

    The message is escaped, so paths and install hints such as ``costbench[litert]`` print as they
    are instead of being read as rich markup, and it is not wrapped, so a long path stays whole.
    """
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
