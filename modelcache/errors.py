"""One hierarchy for every error modelcache raises.

    ModelCacheError
    ├── ConfigError (ValueError)                 bad setting or config key
    ├── UnknownModelError (KeyError)             model id not in the registry
    ├── OfflineError (ConnectionError)           network needed but offline / cold cache
    ├── DownloadError (ConnectionError)          every endpoint failed
    ├── DiskSpaceError (OSError)                 preflight: not enough free space
    │   └── BudgetExceededError                  the cache budget cannot make room
    ├── IntegrityError (ValueError)              size / hash / format / functional check failed
    │   └── BundleIntegrityError                 a bundle file differs from its manifest
    ├── TruncatedBodyError (OSError)             a download ended short or long (retried)
    ├── DeadlineExceededError (TimeoutError)     a request, file or pull outlasted its deadline
    ├── ListingRefusedError (ValueError)         a tree listing passed a bound or left its origin
    ├── RemoteEmbeddingError (ConnectionError)   a remote embedding server failed or gave bad vectors
    ├── UnsafeFileError (PermissionError)        pickle weights, remote code, path escapes
    ├── ReadOnlyCacheError (PermissionError)     a write was needed on a read-only cache
    ├── BackendUnavailableError (ImportError)    an optional extra is not installed
    ├── ModelUnavailableError (RuntimeError)     every fallback tier failed (strict mode)
    ├── MemoryDatabaseError (OSError)            the memory database cannot be opened or written
    ├── BatcherClosedError (RuntimeError)        the batcher's model was switched or unloaded
    ├── OverloadedError (RuntimeError)           batcher queue full (back-pressure)
    └── OnnxUnsupportedError (ValueError)        the ONNX backend cannot run this model

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
            "space (`modelcache rm MODEL`, or set model_cache.evict_on_disk_full: true to let a pull evict "
            "least recently used models) or point MODELCACHE_CACHE_DIR to a larger volume."
        )


class BudgetExceededError(DiskSpaceError):
    """A pull or the cache does not fit the budget and the policy cannot evict enough.

    A :class:`~modelcache.errors.DiskSpaceError` (an ``OSError``): the budget is the disk space
    the cache may use, so code that stops a pull on a full disk stops it here too.
    """

    def __init__(self, needed: int, current: int, limit: int | None, models: int, max_models: int | None,
                 policy: str, reason: str, max_size_gb: float | None = None):
        self.path = "model_cache.max_size_gb" if limit else "model_cache.max_models"
        self.free = max(0, limit - current) if limit else 0
        self.needed, self.current, self.limit = needed, current, limit
        self.models, self.max_models, self.policy = models, max_models, policy
        gb = max_size_gb if max_size_gb is not None else (limit or 0) / 1024**3
        size = f"{current:,} bytes cached + {needed:,} needed" + (
            f" > max_size_gb {gb:g} ({limit:,} bytes)" if limit else "")
        count = f"; {models} models" + (f" (max_models {max_models})" if max_models else "")
        ModelCacheError.__init__(
            self, f"Cache budget exceeded: {size}{count}. {reason}. Run `modelcache prune --dry-run` to see what "
            "could go, `modelcache rm MODEL` / `modelcache unpin MODEL`, or raise model_cache.max_size_gb / "
            "max_models.")


class IntegrityError(ModelCacheError, ValueError):
    #: what a file check that failed says to do (``hint`` replaces it for other checks)
    QUARANTINED = "The file was quarantined; `modelcache pull` fetches it again."

    def __init__(self, file: str, check: str, expected: object = None, actual: object = None,
                 detail: str = "", hint: str | None = None):
        self.file, self.check, self.expected, self.actual, self.detail = file, check, expected, actual, detail
        reason = f"{check} check failed"
        if expected is not None or actual is not None:
            reason += f" (expected {expected}, got {actual})"
        if detail:
            reason += f": {detail}"
        #: what failed, without the file name and without the advice (for reports)
        self.reason = reason
        super().__init__(f"{file}: {reason}. {self.QUARANTINED if hint is None else hint}")


class BundleIntegrityError(IntegrityError):
    """A file of a bundle does not match its manifest (or what is already pinned): nothing was installed."""

    HINT = "Nothing was installed: the bundle is corrupt or altered; export it again."

    def __init__(self, file: str, check: str, expected: object = None, actual: object = None, detail: str = ""):
        super().__init__(file, check, expected, actual, detail, hint=self.HINT)


class TruncatedBodyError(ModelCacheError, OSError):
    """A download ended short of (or past) the size the Hub listed; retried like a dropped connection."""

    def __init__(self, file: str, expected: int, actual: int):
        self.file, self.expected, self.actual = file, expected, actual
        super().__init__(f"{file}: should be {expected} bytes (the Hub's listing), the server sent {actual}; "
                         "the download resumes on the next try")


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


class MemoryDatabaseError(ModelCacheError, OSError):
    """The memory database cannot be opened or written (permissions, a locked or foreign file)."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"memory database {path}: {reason}")


class BatcherClosedError(ModelCacheError, RuntimeError):
    """The micro-batcher was closed (its model was switched or unloaded); no new request is accepted."""


class OverloadedError(ModelCacheError, RuntimeError):
    def __init__(self, queue_size: int):
        self.queue_size = queue_size
        super().__init__(
            f"Embedding queue is full ({queue_size} pending requests). Retry later, or raise "
            "embedding.queue_size / batch_size."
        )


class OnnxUnsupportedError(ModelCacheError, ValueError):
    """The model has a part the ONNX backend does not run (``auto`` then uses torch)."""

    def __init__(self, model: str, why: str):
        self.model = model
        super().__init__(f"{model}: the ONNX backend cannot run this model ({why}). "
                         "Use embedding.backend: torch (or auto).")


class DeadlineExceededError(ModelCacheError, TimeoutError):
    """A request, a file or the whole pull took longer than its deadline; the endpoint is too slow.

    Not retried on the same endpoint: the pull tries the next endpoint. ``setting`` names the
    setting that sets this deadline."""

    def __init__(self, what: str, seconds: float, setting: str, detail: str = "", hint: str | None = None):
        self.what, self.seconds, self.setting, self.detail = what, seconds, setting, detail
        if hint is None:
            hint = (f"the endpoint is too slow or stalls; the next endpoint is tried (raise {setting} for "
                    "a slow but working link)")
        extra = f"; {detail}" if detail else ""
        super().__init__(f"{what}: not done within {seconds:g} s ({setting}){extra}; {hint}")


class ListingRefusedError(ModelCacheError, ValueError):
    """A tree listing passed a bound (pages, entries, bytes), repeated a page, or named another
    origin for its next page. The endpoint is given up (the next one is tried); ``bound`` names
    what was passed."""

    def __init__(self, what: str, bound: str, detail: str):
        self.what, self.bound = what, bound
        super().__init__(f"{what}: refused, {detail} (bound: {bound}). The endpoint's listing is broken or "
                         "hostile; the next endpoint is tried.")


class RemoteEmbeddingError(ModelCacheError, ConnectionError):
    """A remote embedding server (a ``remote:`` tier) failed: down, too slow, 429/503, or an answer
    that is not valid vectors (bad JSON, wrong count or dims, NaN / infinite values). The chain
    moves on to the next tier and tries the server again after its cool-down (``retry_after``:
    the server's Retry-After, in seconds, when it sent one)."""

    def __init__(self, url: str, problem: str, retry_after: float | None = None):
        self.url, self.problem, self.retry_after = url, problem, retry_after
        super().__init__(f"remote embedding server {url}: {problem}; the next tier of the chain serves "
                         "meanwhile (check the server, or its url / model / api / token in `remote:`)")


class EmbeddingSpaceWarning(UserWarning):
    """The embeddings changed embedding space (a fallback outside the model's space, or back).

    A warning, not an error: shown once per change with no logging configured. Vectors from
    before and after are not comparable."""


class PrecisionRefusedError(ModelCacheError, ValueError):
    """A reduced precision (int8, bf16) was refused: it fails the quality gate or the hardware lacks it."""

    def __init__(self, model: str, precision: str, why: str, hint: str):
        self.model, self.precision = model, precision
        super().__init__(f"{model}: precision {precision!r} refused: {why}. {hint}")


class VersionError(ModelCacheError, LookupError):
    """A version command (rollback, upgrade, rm --revision) cannot do what was asked; nothing was changed."""

    def __init__(self, model: str, problem: str, hint: str):
        self.model = model
        super().__init__(f"{model}: {problem}. {hint}")


class PoolFullError(ModelCacheError, RuntimeError):
    """A model cannot be loaded: the loaded-model pool is full and its eviction policy is ``manual``."""

    def __init__(self, model: str, detail: str):
        self.model = model
        super().__init__(f"Cannot load {model}: {detail}, and embedding.eviction_policy is 'manual' (nothing is "
                         "unloaded automatically). Unload a model first (ModelManager.pool.unload(key), "
                         "pool.keys() lists them), raise embedding.max_loaded_models / max_memory_mb, or use "
                         "eviction_policy lru or fifo.")
