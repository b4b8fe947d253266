"""One hierarchy for every error modelcache raises.

    ModelCacheError
    ├── ConfigError (ValueError)                 bad setting or config key
    ├── UnknownModelError (KeyError)             model id not in the registry
    ├── OfflineError (ConnectionError)           network needed but offline / cold cache
    ├── DownloadError (ConnectionError)          every endpoint failed
    ├── DiskSpaceError (OSError)                 preflight: not enough free space
    ├── IntegrityError (ValueError)              size / hash / format / functional check failed
    ├── UnsafeFileError (PermissionError)        pickle weights, remote code, path escapes
    ├── ReadOnlyCacheError (PermissionError)     a write was needed on a read-only cache
    ├── BackendUnavailableError (ImportError)    an optional extra is not installed
    ├── ModelUnavailableError (RuntimeError)     every fallback tier failed (strict mode)
    └── OverloadedError (RuntimeError)           batcher queue full (back-pressure)

Every class also subclasses a builtin so ``except OSError`` style handlers keep working,
carries structured attributes, and says what to do in its message.
"""

from __future__ import annotations

from collections.abc import Sequence


class ModelCacheError(Exception):
    """Base class of every modelcache error."""


class ConfigError(ModelCacheError, ValueError):
    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config {key!r}: {message}")


class UnknownModelError(ModelCacheError, KeyError):
    def __init__(self, model: str, suggestions: Sequence[str] = ()):
        self.model = model
        self.suggestions = list(suggestions)
        hint = f" Did you mean: {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(
            f"Unknown model {model!r}.{hint} Run `modelcache list` for the registry, pass a Hub "
            "repo id such as 'org/name', a local directory, or register one with "
            "modelcache.registry.register(ModelSpec(...))."
        )

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class OfflineError(ModelCacheError, ConnectionError):
    def __init__(self, model: str, reason: str = "offline mode is on and the model is not cached"):
        self.model = model
        super().__init__(
            f"{model}: {reason}. On a machine with network run `modelcache pull {model}`, or "
            f"copy a bundle in with `modelcache install {model} --from DIR` / `modelcache import FILE`."
        )


class DownloadError(ModelCacheError, ConnectionError):
    def __init__(self, repo_id: str, failures: dict[str, str]):
        self.repo_id = repo_id
        self.failures = dict(failures)
        lines = "; ".join(f"{ep}: {why}" for ep, why in self.failures.items())
        super().__init__(
            f"Could not download {repo_id} from any endpoint ({lines}). Check the network or "
            "the endpoints (MODELCACHE_ENDPOINTS / HF_ENDPOINT), or work offline from the cache."
        )


class DiskSpaceError(ModelCacheError, OSError):
    def __init__(self, path: str, needed: int, free: int):
        self.path, self.needed, self.free = path, needed, free
        super().__init__(
            f"Not enough disk space in {path}: need {needed:,} bytes, {free:,} free. Free some "
            "space (`modelcache rm MODEL`) or point MODELCACHE_CACHE_DIR to a larger volume."
        )


class IntegrityError(ModelCacheError, ValueError):
    #: what a file check that failed says to do (``hint`` replaces it for other checks)
    QUARANTINED = "The file was quarantined; `modelcache pull` fetches it again."

    def __init__(self, file: str, check: str, expected: object = None, actual: object = None,
                 detail: str = "", hint: str | None = None):
        self.file, self.check, self.expected, self.actual = file, check, expected, actual
        msg = f"{file}: {check} check failed"
        if expected is not None or actual is not None:
            msg += f" (expected {expected}, got {actual})"
        if detail:
            msg += f": {detail}"
        super().__init__(f"{msg}. {self.QUARANTINED if hint is None else hint}")


class UnsafeFileError(ModelCacheError, PermissionError):
    def __init__(self, what: str, hint: str):
        self.what = what
        super().__init__(f"Refused {what}: {hint}")


class ReadOnlyCacheError(ModelCacheError, PermissionError):
    def __init__(self, path: str, action: str):
        self.path = path
        super().__init__(
            f"Cannot {action}: the cache {path} is read-only. Populate it at build time "
            "(`modelcache pull` / `modelcache import`) or set MODELCACHE_CACHE_DIR to a writable directory."
        )


class BackendUnavailableError(ModelCacheError, ImportError):
    def __init__(self, backend: str, extra: str, cause: str = ""):
        self.backend, self.extra = backend, extra
        msg = f"The {backend} backend is not installed. Install it with: pip install 'modelcache[{extra}]'"
        if cause:
            msg += f" ({cause})"
        super().__init__(msg)


class ModelUnavailableError(ModelCacheError, RuntimeError):
    def __init__(self, model: str, failures: dict[str, str]):
        self.model = model
        self.failures = dict(failures)
        lines = "; ".join(f"{tier}: {why}" for tier, why in self.failures.items())
        super().__init__(f"No embedding model available for {model!r} ({lines}).")


class OverloadedError(ModelCacheError, RuntimeError):
    def __init__(self, queue_size: int):
        self.queue_size = queue_size
        super().__init__(
            f"Embedding queue is full ({queue_size} pending requests). Retry later, or raise "
            "embedding.queue_size / batch_size."
        )
