"""Reading and checking a config file: the bounded YAML reader, durations as the spec writes them
("90s", "30m", "6h", "24h"), and the dimension check's effect on the configured fallback chain.

Used by :mod:`modelcache.settings` (which re-exports what callers need); no settings import here.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import BeforeValidator

from modelcache.errors import ConfigError

#: what a config file may be: bigger, deeper or more aliased YAML is refused before it is built
MAX_CONFIG_BYTES = 1024 * 1024
MAX_CONFIG_DEPTH = 32
MAX_CONFIG_ALIASES = 64
MAX_CONFIG_NODES = 100_000

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(value: Any, unit: float = 1.0) -> Any:
    """A duration as the spec writes it ("90s", "30m", "6h", "24h", "7d", "1h30m", "250ms") in
    units of ``unit`` seconds; numbers (and numeric strings) pass through for the field to check."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    try:
        float(text)
        return text  # a plain number: the field's own unit
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not text or not parts or _DURATION_PART.sub("", text).strip():
        raise ValueError(f"{value!r} is not a duration; write a number or e.g. '90s', '30m', '6h', '24h', '7d'")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    out = seconds / unit
    return int(out) if out == int(out) else out


#: a duration in seconds: a number, or "90s" / "30m" / "6h" / "24h" / "7d"
Seconds = Annotated[float, BeforeValidator(parse_duration)]
IntSeconds = Annotated[int, BeforeValidator(parse_duration)]
#: a duration in milliseconds: a number of ms, or "5ms" / "1s"
Millis = Annotated[float, BeforeValidator(lambda v: parse_duration(v, 0.001))]
#: a duration in days: a number of days, or "30d" / "2w" / "12h"
Days = Annotated[float, BeforeValidator(lambda v: parse_duration(v, 86_400))]


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


def dimension_warnings(settings: Any) -> list[str]:
    """What the dimension check does to the configured chain, when it disables a fallback tier:
    e.g. a 768-d preferred model with 384-d fallbacks and the bundled 384-d model leaves only
    keyword mode. Registry lookups only (unknown names and local dirs are not judged here)."""
    from modelcache.registry import get_registry

    fb = settings.fallback
    if fb.allow_dimension_mismatch or fb.strategy == "strict" or fb.bundled_models_only:
        return []  # strict only takes same-space tiers; bundled_models_only serves the bundled model's space
    registry = get_registry()
    try:
        pref = registry.get(settings.model)
    except Exception:  # noqa: BLE001 - an unknown model is reported where it is loaded
        return []
    if not pref.dims:
        return []
    names = list(fb.models) + (list(pref.same_space) if fb.strategy == "auto" else [])
    if fb.strategy == "auto" and fb.bundled:
        names.append("bundled-mini")
    usable: list[Any] = []
    dropped: list[Any] = []
    seen = {pref.name}
    for name in names:
        try:
            spec = registry.get(name)
        except Exception:  # noqa: BLE001
            continue
        if spec.name in seen:
            continue
        seen.add(spec.name)
        (dropped if spec.dims and spec.dims != pref.dims else usable).append(spec)
    if not dropped:
        return []
    tiers = ", ".join(f"{s.name} ({s.dims} dims)" for s in dropped)
    if usable:
        then = f"the chain goes on to {usable[0].name}"
    elif fb.strategy == "auto" and fb.keyword:
        then = "the chain drops straight to keyword mode"
    else:
        then = "no tier is left to serve"
    return [f"fallback: {pref.name} has {pref.dims} dims, so its fallback tiers {tiers} are disabled by the "
            f"dimension check (fallback.allow_dimension_mismatch=false): when {pref.name} cannot load, {then}. "
            f"Fix: list fallbacks with {pref.dims} dims (a model of the same embedding space), or set "
            f"fallback.allow_dimension_mismatch: true (their vectors are of another space: stored vectors "
            f"must be re-embedded)."]
