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

import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from modelcache.errors import ConfigError
from modelcache.origins import redact_url

DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "true", "yes", "on"}


#: what a config file may be: bigger, deeper or more aliased YAML is refused before it is built
MAX_CONFIG_BYTES = 1024 * 1024
MAX_CONFIG_DEPTH = 32
MAX_CONFIG_ALIASES = 64
MAX_CONFIG_NODES = 100_000


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelCacheSection(_Section):
    directory: Path | None = None
    """Hub-layout cache directory. None: the Hugging Face hub cache."""
    max_size_gb: float | None = Field(default=None, gt=0, le=1_000_000)
    max_models: int | None = Field(default=None, gt=0, le=1_000_000)
    cleanup_policy: Literal["lru", "fifo", "manual"] = "lru"
    validation_interval: int = Field(default=86_400, ge=0, le=10 * 365 * 86_400)
    """Seconds a stat-verified file is trusted before it is re-hashed."""
    download_timeout: float = Field(default=60.0, gt=0, le=86_400)
    parallel_downloads: int = Field(default=4, ge=1, le=32)
    read_only: bool | None = None
    """None: detect (a cache we cannot write to is used read-only)."""
    lockfile: Path | None = None
    """Pins file (commit + sha256 per file). None: inside the cache's .locks/modelcache."""
    max_idle_days: float | None = Field(default=None, gt=0, le=36_500)
    """Remove models unused this many days (last access; never pinned ones) on pulls and `prune`."""
    evict_on_disk_full: bool = False
    """A pull short of disk evicts least recently used unpinned models and retries (else DiskSpaceError)."""


class DownloadSection(_Section):
    endpoints: list[str] = Field(default_factory=list)
    retries: int = Field(default=5, ge=0, le=50)
    backoff_base: float = Field(default=0.5, ge=0, le=60)
    backoff_max: float = Field(default=30.0, ge=0, le=3600)
    connect_timeout: float = Field(default=10.0, gt=0, le=600)
    allow_pickle: bool = False
    disk_margin_mb: int = Field(default=64, ge=0, le=1_000_000_000)
    min_rate_kbps: float = Field(default=50.0, gt=0, le=100_000_000)
    """Slowest transfer rate tolerated, in kilobits per second (1 kbit/s = 125 bytes/s): a file of
    N bytes must arrive within max(file_deadline_min_s, N / rate), else the next endpoint is
    tried (a mirror that trickles never trips the per-read timeout)."""
    file_deadline_min_s: float = Field(default=30.0, ge=0.1, le=86_400)
    """Least time one file is given, whatever its size; also the deadline of each metadata
    request (resolving a revision, one page of a listing)."""
    pull_deadline_s: float = Field(default=3600.0, ge=1, le=7 * 86_400)
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
    retry_preferred_after_s: float = Field(default=60.0, ge=0, le=86_400)
    first_load_deadline_s: float = Field(default=30.0, ge=0, le=3600)
    """How long the first embed waits for a tier to load in the caller's thread (0: no limit). Past it
    the next tier serves; the load goes on in the background and the chain switches back when it is
    done (a mirror that trickles never holds the caller)."""
    first_try_retries: int = Field(default=1, ge=0, le=50)
    """Retries for a load in the caller's thread: the first embed must not stall on a dead Hub.
    Background recovery of the preferred tier uses download.retries."""
    bundled: bool = True
    keyword: bool = True


class EmbeddingSection(_Section):
    backend: Literal["torch", "onnx", "auto"] = "auto"
    """``auto``: ONNX Runtime when onnxruntime is installed and the model has a verified ONNX file
    (made when the model enters the cache), torch otherwise."""
    device: str = "auto"
    """Torch device: ``auto`` picks CUDA, then Apple MPS, then CPU (like the LlamaIndex peer);
    or ``cpu``, ``cuda``, ``cuda:1``, ``mps``... The ONNX backend runs on CPU."""
    batch_size: int = Field(default=32, ge=1, le=4096)
    max_batch_wait_ms: float = Field(default=0.0, ge=0, le=10_000)
    """How long a batch may wait for more callers. 0 (default): continuous batching: a batch is what queued
    while the previous one ran, so a lone caller never waits (measured: 16 threads, same throughput as 5 ms;
    one caller, p50 5.3 ms vs 7.7 ms)."""
    queue_size: int = Field(default=1024, ge=1, le=1_000_000)
    max_loaded_models: int = Field(default=2, ge=1, le=1024)
    keep_alive_s: float | None = Field(default=None, gt=0, le=30 * 86_400)
    """Unload a model idle this long (None: keep it)."""
    max_memory_mb: float | None = Field(default=None, gt=0, le=100_000_000)
    """Memory budget of the loaded-model pool (LRU eviction above it)."""
    precision: Literal["fp32", "int8", "bf16"] = "fp32"
    """``int8``: per-channel dynamic quantisation (ONNX), kept only when it passes the quality gate;
    ``bf16``: bfloat16 autocast (torch) where the CPU has AMX / avx512_bf16. Each precision has its
    own fingerprint: vectors of two precisions never mix."""
    int8_min_cosine: float = Field(default=0.98, ge=0.5, le=1.0)
    """The int8 quality gate: the lowest cosine to fp32 on the probe set an int8 export may have."""

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
    timeout_s: float = Field(default=10.0, gt=0, le=600)
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


def check_endpoint(url: object) -> str:
    """``url`` if it is an http(s) URL with a host (and a valid port), else :class:`ValueError`."""
    if not isinstance(url, str) or not url or any(c.isspace() for c in url):
        raise ValueError(f"endpoint {url!r} must be an http(s) URL without spaces")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"endpoint is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("endpoint must be an http:// or https:// URL with a host, e.g. https://huggingface.co")
    return url


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with limits: nesting depth and alias count (an alias bomb or a
    20,000-deep document is refused, never expanded)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_CONFIG_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_CONFIG_ALIASES} aliases (*refs)")
        self._depth += 1
        try:
            if self._depth > MAX_CONFIG_DEPTH:
                raise yaml.YAMLError(f"nested deeper than {MAX_CONFIG_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def read_yaml(path: Path) -> Any:
    """A config file, parsed with limits on size, depth and aliases (:class:`ConfigError` otherwise)."""
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(str(path), f"config file is {size:,} bytes; the limit is {MAX_CONFIG_BYTES:,}")
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read the config file ({exc})") from None
    try:
        loader = _BoundedLoader(text)
    except yaml.YAMLError as exc:  # a character YAML refuses (the reader checks at once)
        raise ConfigError(str(path), f"not valid YAML: {' '.join(str(exc).split())}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_CONFIG_NODES:
            raise yaml.YAMLError(f"expands to more than {MAX_CONFIG_NODES:,} values (aliases)")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values ``node`` becomes once every alias is expanded (shared nodes counted each time)."""
    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


def _profile_data(name: str) -> dict:
    # only the packaged names: a value from a config file never becomes a path of its own
    if not isinstance(name, str) or name not in ("dev", "prod", "offline"):
        raise ConfigError("profile", f"unknown profile {name!r}; allowed: dev, prod, offline")
    path = resources.files("modelcache").joinpath(f"data/profiles/{name}.yaml")
    if not path.is_file():
        raise ConfigError("profile", f"unknown profile {name!r}; allowed: dev, prod, offline")
    return yaml.safe_load(path.read_text("utf-8")) or {}


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


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
    for section in ("model_cache", "download", "fallback", "embedding"):
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
    return _validate(merged)
