"""What every command shares: the ``--config`` option, database URLs, the stack, errors.

Database URLs follow :func:`strangler_proxy.databases.database_url`: the
environment first, then ``databases:`` in strangler.yaml (when the file
exists), then the embedded SQLite default. The apps a command runs come from
the file's ``stack:`` section (:mod:`strangler_proxy.stack.registry`).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy.engine import make_url

from strangler_proxy.config import StranglerConfig, load_config
from strangler_proxy.databases import database_url
from strangler_proxy.errors import ConfigError
from strangler_proxy.stack.registry import Stack, load_stack

DEFAULT_CONFIG = "strangler.yaml"

console = Console()
err_console = Console(stderr=True)

ConfigOption = typer.Option(
    DEFAULT_CONFIG, "--config", "-c", help="strangler.yaml: its databases: and stack: sections (if it exists)"
)


def configured_url(name: str, config: str = DEFAULT_CONFIG) -> str:
    """The URL of database ``name``, honouring ``databases:`` in ``config`` if present."""
    path = Path(config)
    return load_config(path).database_url_of(name) if path.is_file() else database_url(name)


def config_and_stack(config: str = DEFAULT_CONFIG) -> tuple[StranglerConfig, Stack]:
    """The config file and its stack; a missing file says where the apps are named."""
    path = Path(config)
    if not path.is_file():
        raise ConfigError("no such file; the apps this command runs are named in its stack: section "
                          "(see docs/config.md)", file=config)
    loaded = load_config(path)
    return loaded, load_stack(loaded)


def shown_url(url: str) -> str:
    """A URL safe to print (password hidden)."""
    return make_url(url).render_as_string(hide_password=True)


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` on one line (whitespace runs become one space), cut at ``limit`` characters.

    >>> one_line("<html>\\n  <h1>502 Bad Gateway</h1>\\n</html>", 20)
    '<html> <h1>502 Ba...'
    """
    flat = " ".join(text.split())
    return flat if limit is None or len(flat) <= limit else flat[: limit - 3] + "..."


def print_error(exc: BaseException) -> None:
    """``error: ...`` on stderr, lines never wrapped (they may be commands to copy)."""
    err_console.print("[red]error:[/red]", Text(str(exc)), soft_wrap=True)


def fail(exc: BaseException) -> typer.Exit:
    """Print ``exc`` as an error; the caller raises the exit (code 1)."""
    print_error(exc)
    return typer.Exit(code=1)

