"""modelcache: managed embedding models for agent memory.

Importing this package is cheap: no torch, no model load. Everything heavy happens on first use.
"""

from __future__ import annotations

import logging

from modelcache.errors import (
    ConfigError,
    DiskSpaceError,
    DownloadError,
    IntegrityError,
    ModelCacheError,
    ModelUnavailableError,
    OfflineError,
    UnknownModelError,
    UnsafeFileError,
)
from modelcache.registry import ModelSpec, get_registry, register
from modelcache.settings import Settings, load_settings

logging.getLogger("modelcache").addHandler(logging.NullHandler())

from modelcache._version import __version__  # noqa: E402


def __getattr__(name: str):
    if name in ("ModelManager", "LocalModel", "VerifyReport"):
        from modelcache import manager

        return getattr(manager, name)
    raise AttributeError(f"module 'modelcache' has no attribute {name!r}")


__all__ = [
    "ConfigError", "DiskSpaceError", "DownloadError", "IntegrityError", "ModelCacheError",
    "ModelUnavailableError", "OfflineError", "UnknownModelError", "UnsafeFileError", "ModelSpec",
    "get_registry", "register", "Settings", "load_settings", "ModelManager", "LocalModel", "VerifyReport",
    "__version__",
]
