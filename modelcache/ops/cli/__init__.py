"""The ``modelcache`` command line. Every command takes ``--json`` and exits non-zero on failure.

The commands live in :mod:`.models` (list, pull, verify, info, install, rm) and
:mod:`.operations` (export, import, prune, pin, unpin, doctor, status, outdated, embed, config,
metrics); both register on the one typer app of :mod:`.common`, so importing this package
registers every command.
"""

from __future__ import annotations

import logging
import sys

from modelcache.ops.cli import models, operations  # noqa: F401  (register the commands)
from modelcache.ops.cli.common import app


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    app()


__all__ = ["app", "main"]
