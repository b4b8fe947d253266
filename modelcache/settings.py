"""Every setting in one place: defaults < YAML config file < environment < explicit arguments.

Environment variables read (at call time, never at import time):

| variable | setting |
|---|---|
| MODELCACHE_CONFIG | path of the YAML config file |
| MODELCACHE_CACHE_DIR, else HF_HUB_CACHE, else HF_HOME/hub | model_cache.directory |
| MODELCACHE_OFFLINE, HF_HUB_OFFLINE | offline |
| MODELCACHE_ENDPOINTS (comma-separated), else HF_ENDPOINT | download.endpoints |
| MODELCACHE_TOKEN, else HF_TOKEN, HF_HUB_TOKEN, HUGGINGFACE_HUB_TOKEN | token (never printed) |
| MODELCACHE_READ_ONLY | model_cache.read_only |
| MODELCACHE_LOCKFILE | model_cache.lockfile |
| MODELCACHE_PROFILE | profile: dev / prod / offline |
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from modelcache.configfile import (  # noqa: F401 - re-exported: the config file's reader and limits
    MAX_CONFIG_ALIASES,
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_NODES,
    Days,
    IntSeconds,
    Millis,
    Seconds,
    _merge,
    _profile_data,
    check_endpoint,
    dimension_warnings,
    parse_duration,
    read_yaml,
)
from modelcache.errors import ConfigError
from modelcache.origins import redact_url

DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "true", "yes", "on"}


log = logging.getLogger("modelcache")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelCacheSection(_Section):
    directory: Path | None = None
    """Hub-layout cache directory. None: the Hugging Face hub cache."""
    max_size_gb: float | None = Field(default=None, gt=0, le=1_000_000)
    max_models: int | None = Field(default=None, gt=0, le=1_000_000)
    cleanup_policy: Literal["lru", "fifo", "manual"] = "lru"
    validation_interval: IntSeconds = Field(default=86_400, ge=0, le=10 * 365 * 86_400)
    """Seconds a stat-verified file is trusted before it is re-hashed (or "6h", "24h"): a model
    loaded after that is re-hashed first, and ``modelcache doctor`` names the models that are due."""
    validation_on_startup: bool = False
    """Re-hash every file of a model the first time a model manager (in practice: a process) uses
    it, whatever ``validation_interval`` says (a stat stamp from an earlier run is not trusted)."""
    download_timeout: Seconds = Field(default=60.0, gt=0, le=86_400)
    parallel_downloads: int = Field(default=4, ge=1, le=32)
    read_only: bool | None = None
    """None: detect (a cache we cannot write to is used read-only)."""
    lockfile: Path | None = None
    """Pins file (commit + sha256 per file). None: inside the cache's .locks/modelcache."""
    max_idle_days: Days | None = Field(default=None, gt=0, le=36_500)
    """Remove models unused this many days (last access; never pinned ones) on pulls and `prune`."""
    evict_on_disk_full: bool = False
    """A pull short of disk evicts least recently used unpinned models and retries (else DiskSpaceError)."""


class DownloadSection(_Section):
    enabled: bool = True
    """False: nothing is ever downloaded (``pull`` refuses, a missing model is a miss for the
    fallback chain); the cache, ``import`` and ``install`` still work."""
    auto_download: bool = True
    """False: a model missing from the cache is not pulled on first use (the chain falls back);
    only ``modelcache pull`` downloads."""
    compression: bool = True
    """Ask for compressed HTTP bodies (Accept-Encoding: gzip, deflate, br, zstd as the HTTP client
    decodes them) on metadata requests and fresh file GETs; a resumed GET (Range) is always
    ``identity``. False: ``Accept-Encoding: identity`` on every request."""
    chunk_size_kb: int = Field(default=1024, ge=4, le=1024 * 1024)
    """Write buffer of a download, in KiB: received bytes reach the ``.part`` file in chunks of this
    size (the deadline is still checked after every network read)."""
    endpoints: list[str] = Field(default_factory=list)
    retries: int = Field(default=5, ge=0, le=50)
    backoff_base: Seconds = Field(default=0.5, ge=0, le=60)
    backoff_max: Seconds = Field(default=30.0, ge=0, le=3600)
    connect_timeout: Seconds = Field(default=10.0, gt=0, le=600)
    allow_pickle: bool = False
    disk_margin_mb: int = Field(default=64, ge=0, le=1_000_000_000)
    min_rate_kbps: float = Field(default=50.0, gt=0, le=100_000_000)
    """Slowest transfer rate tolerated, in kilobits per second (1 kbit/s = 125 bytes/s): a file of
    N bytes must arrive within max(file_deadline_min_s, N / rate), else the next endpoint is
    tried (a mirror that trickles never trips the per-read timeout)."""
    file_deadline_min_s: Seconds = Field(default=30.0, ge=0.1, le=86_400)
    """Least time one file is given, whatever its size; also the deadline of each metadata
    request (resolving a revision, one page of a listing)."""
    pull_deadline_s: Seconds = Field(default=3600.0, ge=1, le=7 * 86_400)
    """A whole pull, over every endpoint; once spent no further endpoint is tried (DownloadError)."""
    token_endpoints: list[str] | None = Field(default=None, max_length=64)
    """Endpoints whose origin (scheme, host, port) receives the token. None: the Hub only,
    https://huggingface.co and HF_ENDPOINT when it is set; a mirror in ``endpoints`` gets no
    Authorization header unless listed here (``[]``: the token goes nowhere). A URL a server
    names (a listing's next page on another origin) never receives it: such a link is refused."""

    @field_validator("token_endpoints")
    @classmethod
    def _token_urls(cls, value: list[str] | None) -> list[str] | None:
        for url in value or ():
            check_endpoint(url)
        return value

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            check_endpoint(url)
        return value


class FallbackSection(_Section):
    models: list[str] = Field(default_factory=list)
    strategy: Literal["auto", "manual", "strict"] = "auto"
    allow_dimension_mismatch: bool = False
    retry_preferred_after_s: Seconds = Field(default=60.0, ge=0, le=86_400)
    first_load_deadline_s: Seconds = Field(default=30.0, ge=0, le=3600)
    """How long the first embed waits for a tier to load in the caller's thread (0: no limit). Past it
    the next tier serves; the load goes on in the background and the chain switches back when it is
    done (a mirror that trickles never holds the caller)."""
    first_try_retries: int = Field(default=1, ge=0, le=50)
    """Retries for a load in the caller's thread: the first embed must not stall on a dead Hub.
    Background recovery of the preferred tier uses download.retries."""
    bundled: bool = True
    keyword: bool = True
    bundled_models_only: bool = False
    """Serve only the bundled model (then keyword mode, if on): the preferred model and every
    other fallback are skipped and never downloaded. Needs ``bundled: true``."""

    @model_validator(mode="after")
    def _bundled_only_needs_bundled(self) -> FallbackSection:
        if self.bundled_models_only and not self.bundled:
            raise ValueError("bundled_models_only needs bundled: true (nothing else would be left to serve)")
        return self


class MonitoringSection(_Section):
    """Prometheus metrics for the process that serves embeddings (needs the ``metrics`` extra)."""

    enabled: bool = False
    """Record modelcache's metrics (``modelcache.metrics.enable()``) as soon as a model manager starts."""
    metrics_port: int | None = Field(default=None, ge=0, le=65_535)
    """Also serve them at http://metrics_host:metrics_port/metrics once the embedding service first
    loads a tier (a daemon thread, once per process). None: no server (scrape your own registry)."""
    metrics_host: str = "127.0.0.1"
    """Where the metrics server listens (0.0.0.0 for a container's port mapping)."""

    @model_validator(mode="after")
    def _port_needs_enabled(self) -> MonitoringSection:
        if self.metrics_port is not None and not self.enabled:
            raise ValueError("metrics_port needs enabled: true")
        return self


class EmbeddingSection(_Section):
    backend: Literal["torch", "onnx", "auto"] = "auto"
    """``auto``: ONNX Runtime when onnxruntime is installed and the model has a verified ONNX file
    (made when the model enters the cache), torch otherwise."""
    device: str = "auto"
    """Torch device: ``auto`` picks CUDA, then Apple MPS, then CPU (like the LlamaIndex peer);
    or ``cpu``, ``cuda``, ``cuda:1``, ``mps``... The ONNX backend runs on CPU."""
    batch_size: int = Field(default=32, ge=1, le=4096)
    max_batch_wait_ms: Millis = Field(default=0.0, ge=0, le=10_000)
    """How long a batch may wait for more callers. 0 (default): continuous batching: a batch is what queued
    while the previous one ran, so a lone caller never waits (measured: 16 threads, same throughput as 5 ms;
    one caller, p50 5.3 ms vs 7.7 ms)."""
    queue_size: int = Field(default=1024, ge=1, le=1_000_000)
    parallel_batches: int = Field(default=1, ge=1, le=64)
    """Batches encoded at once (the spec's batch config): each of that many workers gathers and runs its
    own, so tokenising and pooling one overlap the next one's inference. 1: one at a time."""
    max_loaded_models: int = Field(default=2, ge=1, le=1024)
    keep_alive_s: Seconds | None = Field(default=None, gt=0, le=30 * 86_400)
    """Unload a model idle this long (None: keep it)."""
    max_memory_mb: float | None = Field(default=None, gt=0, le=100_000_000)
    """Memory budget of the loaded-model pool (LRU eviction above it)."""
    precision: Literal["fp32", "int8", "bf16"] = "fp32"
    """``int8``: per-channel dynamic quantisation (ONNX), kept only when it passes the quality gate;
    ``bf16``: bfloat16 autocast (torch) where the CPU has AMX / avx512_bf16. Each precision has its
    own fingerprint: vectors of two precisions never mix."""
    int8_min_cosine: float = Field(default=0.98, ge=0.5, le=1.0)
    """The int8 quality gate: the lowest cosine to fp32 on the probe set an int8 export may have."""
    eviction_policy: Literal["lru", "fifo", "manual"] = "lru"
    """Loaded model that goes first past a pool limit: lru, fifo (first loaded), manual (none: an error)."""
    min_available_memory_mb: float | None = Field(default=None, gt=0, le=100_000_000)
    """Unload loaded models (eviction_policy order) while the system's available memory is below this."""
    preload_models: list[str] = Field(default_factory=list, max_length=64)
    """Models loaded (in the background) when the service starts, i.e. with the first model loaded."""

    @model_validator(mode="before")
    @classmethod
    def _quantize_alias(cls, data: Any) -> Any:
        # `quantize` was this setting's name before `precision`: old config files keep working
        if isinstance(data, dict) and "quantize" in data:
            data = dict(data)
            value = data.pop("quantize")
            data.setdefault("precision", value)
        return data


class RemoteSection(_Section):
    """One remote embedding server: a tier ahead of the local model (``modelcache.serving.remote``)."""

    url: str
    """openai: the OpenAI SDK's base URL, POST {url}/embeddings (``http://gpu:8000/v1``); tei: POST {url}/embed."""
    model: str = Field(min_length=1, max_length=300)
    api: Literal["openai", "tei"] = "openai"
    token: SecretStr | None = None
    """Sent as ``Authorization: Bearer`` to this URL only (the Hub token never goes there)."""
    timeout_s: Seconds = Field(default=10.0, gt=0, le=600)
    batch_size: int = Field(default=32, ge=1, le=4096)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_endpoint(value).rstrip("/")


class Settings(_Section):
    model: str = "all-MiniLM-L6-v2"
    profile: Literal["dev", "prod", "offline"] | None = None
    offline: bool = False
    token: SecretStr | None = None
    model_cache: ModelCacheSection = Field(default_factory=ModelCacheSection)
    download: DownloadSection = Field(default_factory=DownloadSection)
    fallback: FallbackSection = Field(default_factory=FallbackSection)
    embedding: EmbeddingSection = Field(default_factory=EmbeddingSection)
    monitoring: MonitoringSection = Field(default_factory=MonitoringSection)
    remote: list[RemoteSection] = Field(default_factory=list, max_length=16)  # servers tried before the local model

    # -- derived -------------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        if self.model_cache.directory is not None:
            return Path(self.model_cache.directory).expanduser()
        if os.environ.get("HF_HUB_CACHE"):
            return Path(os.environ["HF_HUB_CACHE"]).expanduser()
        hf_home = os.environ.get("HF_HOME") or os.path.join(
            os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
        return Path(hf_home).expanduser() / "hub"

    @property
    def endpoints(self) -> list[str]:
        return [e.rstrip("/") for e in self.download.endpoints] or [DEFAULT_ENDPOINT]

    @property
    def token_value(self) -> str | None:
        return self.token.get_secret_value() if self.token else None

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain data with secrets replaced (for `config show`)."""
        data = self.model_dump(mode="json")
        data["token"] = "***" if self.token else None
        data["model_cache"]["directory"] = str(self.cache_dir)
        data["download"]["endpoints"] = [redact_url(e) for e in self.endpoints]
        if data["download"].get("token_endpoints"):
            data["download"]["token_endpoints"] = [redact_url(e) for e in data["download"]["token_endpoints"]]
        data["remote"] = [dict(r, url=redact_url(r["url"])) for r in data["remote"]]
        return data


#: where the token is read from, first found wins (huggingface_hub's own order after ours)
TOKEN_ENV = ("MODELCACHE_TOKEN", "HF_TOKEN", "HF_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN")


def _env_data(env: dict[str, str]) -> dict:
    data: dict[str, Any] = {}
    section = lambda name: data.setdefault(name, {})  # noqa: E731
    if env.get("MODELCACHE_CACHE_DIR"):
        section("model_cache")["directory"] = env["MODELCACHE_CACHE_DIR"]
    if env.get("MODELCACHE_READ_ONLY"):
        section("model_cache")["read_only"] = env["MODELCACHE_READ_ONLY"].lower() in _TRUE
    if env.get("MODELCACHE_LOCKFILE"):
        section("model_cache")["lockfile"] = env["MODELCACHE_LOCKFILE"]
    if any(env.get(k, "").lower() in _TRUE for k in ("MODELCACHE_OFFLINE", "HF_HUB_OFFLINE")):
        data["offline"] = True
    if env.get("MODELCACHE_ENDPOINTS"):
        section("download")["endpoints"] = [e.strip() for e in env["MODELCACHE_ENDPOINTS"].split(",") if e.strip()]
    token = next((env[k] for k in TOKEN_ENV if env.get(k)), None)
    if token:
        data["token"] = token
    if env.get("MODELCACHE_PROFILE"):
        data["profile"] = env["MODELCACHE_PROFILE"]
    return data


def _allowed_keys(loc: tuple) -> list[str] | None:
    """The keys the section at ``loc`` accepts (for 'unknown key' errors)."""
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        if isinstance(part, int):  # an entry of a list section (remote: [...])
            continue
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if get_origin(annotation) is list:
            annotation = get_args(annotation)[0]
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return sorted(model.model_fields)


def _validate(data: dict) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "config"
        if err["type"] == "extra_forbidden":
            raise ConfigError(key, f"unknown key; allowed: {', '.join(_allowed_keys(err['loc']) or [])}") from None
        allowed = err.get("ctx", {}).get("expected")
        hint = f"; allowed: {allowed}" if allowed else ""
        got = err.get("input")
        if err["loc"] and err["loc"][0] == "token":  # a secret, even when it is malformed
            got = f"a {type(got).__name__}"
        raise ConfigError(key, f"{err['msg']} (got {got!r}){hint}") from None


def load_settings(config: str | Path | dict | None = None, **overrides: Any) -> Settings:
    """Build the effective settings. ``overrides`` use the nested layout (``download={...}``)."""
    env = dict(os.environ)
    if isinstance(config, dict):
        file_data = config
    else:
        path = config or env.get("MODELCACHE_CONFIG")
        file_data = {}
        if path:
            p = Path(path).expanduser()
            if not p.is_file():
                raise ConfigError("MODELCACHE_CONFIG", f"config file {p} does not exist")
            file_data = read_yaml(p) or {}
            if not isinstance(file_data, dict):
                raise ConfigError(str(p), "the top level must be a mapping of sections")
    for section in ("model_cache", "download", "fallback", "embedding", "monitoring"):
        # checked before merging: the environment's section would otherwise replace a bad one silently
        if section in file_data and not isinstance(file_data[section], dict):
            raise ConfigError(section, f"must be a mapping of settings, got {file_data[section]!r}")
    env_data = _env_data(env)
    if not env.get("MODELCACHE_ENDPOINTS") and env.get("HF_ENDPOINT") and not (
            file_data.get("download", {}) or {}).get("endpoints"):
        env_data.setdefault("download", {})["endpoints"] = [env["HF_ENDPOINT"]]
    merged = _merge(_merge(file_data, env_data), {k: v for k, v in overrides.items() if v is not None})
    profile = merged.get("profile")
    if profile:
        merged = _merge(_profile_data(profile), merged)
    settings = _validate(merged)
    for warning in dimension_warnings(settings):
        log.warning("%s", warning)
    return settings
