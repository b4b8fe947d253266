"""The model registry: frozen ``ModelSpec`` entries loaded from ``data/models.yaml``.

Lookup accepts a registry name, an alias, a Hub repo id (``org/name``) or a local directory.
Anything else raises :class:`UnknownModelError` listing close matches.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from modelcache._util import safe_relpath
from modelcache.errors import ConfigError, UnknownModelError, UnsafeFileError

#: Files fetched for an embedding model unless a spec says otherwise.
DEFAULT_INCLUDE = (
    "*.json", "*.txt", "*.model", "*.safetensors", "*.tiktoken", "*merges*", "*vocab*",
)
#: Never fetched unless explicitly allowed: pickle-based weights and other backends' formats.
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle", "*.h5", "*.msgpack", "*.ot")
DEFAULT_EXCLUDE = ("onnx/*", "openvino/*", "*.onnx", "*.md", ".gitattributes")


@dataclass(frozen=True)
class ModelSpec:
    """Everything modelcache knows about one embedding model."""

    name: str
    repo_id: str
    dims: int | None = None
    max_seq_length: int | None = None
    approx_size_mb: float | None = None
    license: str | None = None
    languages: tuple[str, ...] = ()
    revision: str = "main"
    query_prompt: str = ""
    document_prompt: str = ""
    normalize: bool = True
    aliases: tuple[str, ...] = ()
    #: names of other specs whose vectors live in the same embedding space
    same_space: tuple[str, ...] = ()
    #: file path -> sha256 known for sure (from the data file; never guessed)
    sha256: tuple[tuple[str, str], ...] = ()
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    #: "hub" (default), "package:<module>" (files shipped in a Python package) or "local:<dir>"
    source: str = "hub"
    default: bool = False
    custom: bool = False

    @property
    def known_sha256(self) -> dict[str, str]:
        return dict(self.sha256)

    @property
    def local_dir(self) -> Path | None:
        if self.source.startswith("local:"):
            return Path(self.source[len("local:"):])
        if self.source.startswith("package:"):
            module = self.source[len("package:"):]
            try:
                return Path(str(resources.files(module) / "model"))
            except ModuleNotFoundError:
                return None
        return None

    def to_dict(self) -> dict:
        return {
            "name": self.name, "repo_id": self.repo_id, "dims": self.dims,
            "max_seq_length": self.max_seq_length, "approx_size_mb": self.approx_size_mb,
            "license": self.license, "languages": list(self.languages), "revision": self.revision,
            "query_prompt": self.query_prompt, "document_prompt": self.document_prompt,
            "normalize": self.normalize, "aliases": list(self.aliases),
            "same_space": list(self.same_space), "source": self.source,
            "sha256": self.known_sha256, "custom": self.custom,
        }


_TUPLE_FIELDS = {"languages", "aliases", "same_space", "include", "exclude"}
_STR_FIELDS = {"revision", "query_prompt", "document_prompt", "source"}
_BOOL_FIELDS = {"normalize", "default", "custom"}
_POSITIVE_INT_FIELDS = {"dims", "max_seq_length"}
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if the Hub would accept it (huggingface_hub's own rules: 'name' or 'org/name',
    letters, digits, '-', '_', '.', no '--' or '..', at most 96 characters), else :class:`ConfigError`.

    huggingface_hub is imported only here (a repo id from outside the registry), never on a load
    from the registry."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ConfigError("repo_id", f"{exc} Repo ids with '--' or '..' would collide with another repo's "
                                     "cache folder.") from None
    return repo_id


def _check_field(key: str, value: object) -> object:
    """``value`` converted for the dataclass, or :class:`ConfigError` naming ``key``."""
    if key in ("name", "repo_id"):
        if not isinstance(value, str) or not value.strip() or "\x00" in value or "\\" in value:
            raise ConfigError(key, f"required, a non-empty string, got {value!r}")
        return value
    if value is None and key not in _STR_FIELDS | _BOOL_FIELDS:
        return () if key in _TUPLE_FIELDS or key == "sha256" else None
    if key in _STR_FIELDS:
        if not isinstance(value, str) or (key in ("revision", "source") and not value.strip()):
            raise ConfigError(key, f"must be a string, got {value!r}")
        if key == "source" and not (value == "hub" or value.startswith(("package:", "local:"))):
            raise ConfigError(key, f"must be 'hub', 'package:<module>' or 'local:<dir>', got {value!r}")
        return value
    if key == "license":
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {value!r}")
        return value
    if key in _BOOL_FIELDS:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if key in _POSITIVE_INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(key, f"must be a positive integer, got {value!r}")
        return value
    if key == "approx_size_mb":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(key, f"must be a non-negative number, got {value!r}")
        return float(value)
    if key in _TUPLE_FIELDS:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not all(
                isinstance(v, str) for v in value):
            raise ConfigError(key, f"must be a list of strings, got {value!r}")
        return tuple(value)
    if key == "sha256":
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"must map file paths to sha256 hex digests, got {value!r}")
        out = []
        for path, digest in value.items():
            try:
                safe_relpath(path)
            except UnsafeFileError as exc:
                raise ConfigError(key, str(exc)) from None
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                raise ConfigError(key, f"{path!r}: must be 64 hex digits, got {digest!r}")
            out.append((path, digest.lower()))
        return tuple(sorted(out))
    return value


def spec_from_dict(data: Mapping) -> ModelSpec:
    """Build a spec from a mapping, with errors that name the bad key (:class:`ConfigError`)."""
    if not isinstance(data, Mapping):
        raise ConfigError("model", f"a model entry must be a mapping, got {type(data).__name__}")
    known = set(ModelSpec.__dataclass_fields__)
    unknown = sorted(str(k) or repr(k) for k in data if k not in known)
    if unknown:
        raise ConfigError(unknown[0], f"unknown model field; allowed: {', '.join(sorted(known))}")
    kwargs: dict[str, Any] = {key: _check_field(key, data.get(key)) for key in ("name", "repo_id")}
    kwargs.update({key: _check_field(key, value) for key, value in data.items() if key not in kwargs})
    return ModelSpec(**kwargs)


class Registry:
    """Name/alias/repo-id lookup over a set of specs. Thread-safe registration."""

    def __init__(self, specs: list[ModelSpec], trusted: bool = False):
        """``trusted``: the packaged data file (its repo ids are checked by the tests, so loading
        it imports no huggingface_hub); any other spec's Hub repo id is validated."""
        self._lock = threading.Lock()
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            self.register(spec, validate=not trusted)

    @classmethod
    def from_package(cls) -> Registry:
        text = resources.files("modelcache").joinpath("data/models.yaml").read_text("utf-8")
        # our own packaged file (trusted): libyaml's C loader when PyYAML has it (16 ms -> 2 ms at import)
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - safe loaders only
        return cls([spec_from_dict(d) for d in data["models"]], trusted=True)

    def register(self, spec: ModelSpec, validate: bool = True) -> ModelSpec:
        """Add (or replace, by name) a spec; a Hub repo id is checked as the Hub would."""
        if validate and spec.source == "hub":
            check_repo_id(spec.repo_id)
        with self._lock:
            self._specs[spec.name] = spec
        return spec

    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def default(self) -> ModelSpec:
        return next(s for s in self._specs.values() if s.default)

    def _index(self) -> dict[str, ModelSpec]:
        index: dict[str, ModelSpec] = {}
        for spec in self._specs.values():
            for key in (spec.name, *spec.aliases):
                index.setdefault(key.lower(), spec)
        for spec in self._specs.values():  # repo ids last: prefer the hub entry over bundled
            if spec.source == "hub":
                index.setdefault(spec.repo_id.lower(), spec)
        return index

    def _known_weights(self, path: Path) -> ModelSpec | None:
        """The registry entry whose known weights (sha256) the directory holds, if any."""
        candidates = [s for s in self._specs.values() if s.source == "hub" and s.known_sha256]
        for spec in candidates:
            for rel, digest in spec.known_sha256.items():
                f = path / rel
                if f.is_file() and _file_sha256(f) == digest:
                    return spec
        return None

    def get(self, model: str) -> ModelSpec:
        """Resolve ``model``; a Hub repo id or local dir not in the registry becomes a custom spec."""
        if not isinstance(model, str) or not model.strip():
            raise UnknownModelError(repr(model), [])
        index = self._index()
        spec = index.get(model.lower())
        if spec is not None:
            return spec
        path = Path(model).expanduser()
        if path.is_dir():
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.name)
            slug = re.sub(r"\.{2,}", ".", re.sub(r"-{2,}", "-", slug)).strip("-.") or "model"
            local = ModelSpec(name=path.name, repo_id=f"local/{slug}"[:96], source=f"local:{path.resolve()}",
                              custom=True)
            known = self._known_weights(path)
            if known is not None:  # the registry's model in another directory: its name and settings,
                # cached under its own local repo id (never over the Hub repo's refs and lock entry)
                return dataclasses.replace(known, repo_id=local.repo_id, source=local.source, aliases=(),
                                           same_space=(known.name, *known.same_space), default=False, custom=True)
            return local
        if model.count("/") == 1 and all(part.strip() for part in model.split("/")):
            return ModelSpec(name=model, repo_id=check_repo_id(model), custom=True)
        raise UnknownModelError(model, difflib.get_close_matches(model.lower(), list(index), n=3, cutoff=0.5))


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so a directory is hashed once a process."""
    st = path.stat()
    return _sha256_of(str(path.resolve()), st.st_size, st.st_mtime_ns)


_default: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry (built once from the packaged data file)."""
    global _default
    if _default is None:
        _default = Registry.from_package()
    return _default


def register(spec: ModelSpec) -> ModelSpec:
    """Register a custom model in the process-wide registry."""
    return get_registry().register(spec)
