"""What every command shares: turning knsd errors into a message and an exit code (the one place)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from knsd.errors import KnsdError


@contextmanager
def cli_errors(command: str) -> Iterator[None]:
    """Print `knsd COMMAND: error: ...` on stderr and exit with the error's code."""
    try:
        yield
    except KnsdError as exc:
        typer.echo(f"knsd {command}: error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo(f"knsd {command}: interrupted", err=True)
        raise typer.Exit(130) from None
