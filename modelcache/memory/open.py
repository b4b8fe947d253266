"""Open the memory database a target names: a directory (SQLite) or a ``postgresql://`` URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelcache.errors import ConfigError
from modelcache.memory.db import MemoryDB, SQLiteMemoryDB
from modelcache.memory.postgres import URL_SCHEMES, PostgresMemoryDB
from modelcache.origins import redact_url


def is_memory_db(target: object) -> bool:
    """True for an opened database (anything with the MemoryDB methods), not a path or a URL."""
    return not isinstance(target, (str, Path)) and all(hasattr(target, m) for m in ("add", "search", "pending"))


def open_memory_db(target: str | Path | MemoryDB, **options: Any) -> MemoryDB:
    """The memory database at ``target``: a ``MemoryDB`` as it is; ``postgresql://`` or
    ``postgres://`` URL -> :class:`~modelcache.memory.postgres.PostgresMemoryDB` (needs
    ``pip install "modelcache[postgres]"``); any other path -> :class:`SQLiteMemoryDB` in that
    directory. ``options`` go to the database's constructor."""
    if is_memory_db(target):
        return target  # type: ignore[return-value]
    if not isinstance(target, (str, Path)):
        raise TypeError(f"a memory database is a directory, a postgresql:// URL or a MemoryDB, "
                        f"got {type(target).__name__}")
    text = str(target)
    if text.startswith(URL_SCHEMES):
        return PostgresMemoryDB(text, **options)
    if isinstance(target, str) and "://" in text:
        raise ConfigError("memory_url", f"{redact_url(text)} is not a supported memory database: give a "
                                        "postgresql:// URL or a directory for SQLite")
    return SQLiteMemoryDB(target, **options)


def resolve_memory_target(memory_dir: str | Path | MemoryDB | None,
                          memory_url: str | None) -> str | Path | MemoryDB | None:
    """The one target of a ``memory_dir=`` / ``memory_url=`` pair (both given: an error)."""
    if memory_url is not None and memory_dir is not None:
        raise ValueError("give memory_dir (a directory or a MemoryDB) or memory_url (a postgresql:// URL), not both")
    if memory_url is not None and not str(memory_url).startswith(URL_SCHEMES):
        raise ConfigError("memory_url", f"{redact_url(memory_url)} is not a postgresql:// (or postgres://) URL; "
                                        "for SQLite pass memory_dir= instead")
    return memory_url if memory_url is not None else memory_dir


__all__ = ["URL_SCHEMES", "is_memory_db", "open_memory_db", "resolve_memory_target"]
