"""What every ``modelcache`` command shares: the typer app, consoles, ``--json`` / ``--config``
options, the manager factory and the one error path (``_fail``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from modelcache.settings import load_settings

app = typer.Typer(help="Managed embedding models: pull, cache, verify.", no_args_is_help=True,
                  pretty_exceptions_enable=False)

console = Console(stderr=False)

err_console = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML config file.")]


def _manager(config: Path | None = None, **overrides):
    from modelcache.manager import ModelManager

    return ModelManager(load_settings(config, **overrides))


def _emit(as_json: bool, data, render) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=1, default=str))
    else:
        render()


def report_error(as_json: bool, exc: BaseException) -> None:
    """The one way a failure is shown: one line on stderr, or one JSON object on stdout with --json."""
    if as_json:
        typer.echo(json.dumps({"ok": False, "error": type(exc).__name__, "message": str(exc)}))
    else:
        err_console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)


def _fail(as_json: bool, exc: Exception, code: int = 1):
    report_error(as_json, exc)
    raise typer.Exit(code)
