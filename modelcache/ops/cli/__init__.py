"""The ``modelcache`` command line. Every command takes ``--json`` and exits non-zero on failure.

The commands live in :mod:`.models` (list, pull, verify, info, install, rm) and
:mod:`.operations` (export, import, prune, pin, unpin, doctor, status, outdated, embed, config,
metrics) and :mod:`.versions` (versions, upgrade, rollback); all register on the one typer app of
:mod:`.common`, so importing this package registers every command.
"""

from __future__ import annotations

import logging
import os
import sys

from modelcache.errors import ModelCacheError
from modelcache.ops.cli import models, operations, versions  # noqa: F401  (register the commands)
from modelcache.ops.cli.common import app, report_error


def main() -> None:
    """Run the CLI. A failure no command handled itself (a bad MODELCACHE_CONFIG, a permission
    denied, an unexpected error) is still one clean line (or JSON with --json) and exit code 1;
    ``MODELCACHE_DEBUG=1`` shows the traceback instead."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if os.environ.get("MODELCACHE_DEBUG"):
        app()
        return
    try:
        app()
    except (ModelCacheError, OSError, ValueError) as exc:
        report_error("--json" in sys.argv[1:], exc)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - a bug, still shown as one line; MODELCACHE_DEBUG=1 for the trace
        report_error("--json" in sys.argv[1:], RuntimeError(f"internal error {type(exc).__name__}: {exc} "
                                                            "(MODELCACHE_DEBUG=1 shows the traceback)"))
        sys.exit(1)


__all__ = ["app", "main"]
