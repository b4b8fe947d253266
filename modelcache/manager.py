"""``ModelManager``: the facade adapters and the CLI use.

registry lookup → cache (hit? verified?) → pull on a miss → integrity → backend load (lazy) → vectors.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelcache import metrics
from modelcache.backends.base import ModelDir
from modelcache.backends.pool import ModelPool
from modelcache.backends.preload import start_preload
from modelcache.cache import fingerprint as fp
from modelcache.cache import history
from modelcache.cache import validation as vs
from modelcache.cache.integrity import (
    FileExpectation,
    StatStamp,
    expectation_from_blob,
    git_blob_sha1,
    sha256_file,
    verify_file,
)
from modelcache.cache.lockfile import Lockfile
from modelcache.cache.publish import publish
from modelcache.cache.store import CacheStore, iso_now
from modelcache.cache.validation import VerifyReport
from modelcache.errors import (
    BackendUnavailableError,
    IntegrityError,
    OfflineError,
    PoolFullError,
    PrecisionRefusedError,
    UnknownModelError,
    UnsafeFileError,
)
from modelcache.hub.pull import Puller, PullResult, select_files
from modelcache.registry import ModelSpec, Registry, get_registry
from modelcache.settings import Settings, load_settings

log = logging.getLogger("modelcache")

#: files stored as LFS objects on the Hub (their blob is named by sha256)
LFS_SUFFIXES = (".safetensors", ".onnx", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt")
LFS_MIN_SIZE = 10 * 1024 * 1024


@dataclass
class LocalModel(ModelDir):
    """A cached, verified model: the snapshot plus every file's expectation and how it got here."""

    files: dict[str, FileExpectation] = field(default_factory=dict)
    pulled: PullResult | None = None


class ModelManager:
    """Pull, verify and load embedding models. Cheap to construct: nothing is loaded here."""

    def __init__(self, settings: Settings | None = None, registry: Registry | None = None):
        self.settings = settings or load_settings()
        self.registry = registry or get_registry()
        self.store = CacheStore(self.settings.cache_dir, self.settings.model_cache.read_only)
        lock_path = self.settings.model_cache.lockfile or (self.store.state_dir / "lock.json")
        self.lockfile = Lockfile(lock_path, read_only=self.store.read_only)
        self.puller = Puller(self.settings, self.store, self.lockfile)
        emb = self.settings.embedding
        self.pool = ModelPool(max_loaded_models=emb.max_loaded_models,
                              max_memory_bytes=int(emb.max_memory_mb * 1e6) if emb.max_memory_mb else None,
                              keep_alive_s=emb.keep_alive_s, warm=self.load, policy=emb.eviction_policy,
                              min_available_bytes=int(emb.min_available_memory_mb * 1e6)
                              if emb.min_available_memory_mb else None)
        self._validated: set[str] = set()  # repos verified by this process (validation_on_startup)
        self.preloading: threading.Thread | None = None  # embedding.preload_models, with the first load
        metrics.apply_monitoring(self.settings, self.store, self.pool)  # monitoring.enabled: record metrics

    # -- lookup -------------------------------------------------------------------------
    def spec(self, model: str | ModelSpec | None = None) -> ModelSpec:
        if isinstance(model, ModelSpec):
            return model
        return self.registry.get(self.settings.model if model is None else model)

    # -- getting files on disk ----------------------------------------------------------
    def pull(self, model: str | ModelSpec | None = None, revision: str | None = None, **kwargs) -> PullResult:
        spec = self.spec(model)
        if spec.local_dir is not None and spec.source != "hub":
            pulled = self.install(spec, spec.local_dir).pulled
            assert pulled is not None
            return pulled
        if kwargs.get("include") is None:
            from modelcache.backends.onnx.export import with_repo_onnx

            spec = with_repo_onnx(spec, self.settings)
        before = (history.state_before_upgrade(self.store, self.lockfile, spec, revision, self.fingerprint)
                  if kwargs.get("upgrade") else None)
        result = self.puller.pull(spec, revision, **kwargs)
        history.record_upgrade(self.store, spec, before, result.commit, result.dry_run)
        if result.downloaded and not result.dry_run and kwargs.get("include") is None:
            self._functional_after_write(spec, result.commit, result.snapshot)
        return result

    def ensure(self, model: str | ModelSpec | None = None, revision: str | None = None,
               download: bool = True, retries: int | None = None) -> LocalModel:
        """The model's files on disk, verified (fast path: stat stamps), pulling if needed."""
        spec = self.spec(model)
        hit = self.puller.cached(spec, revision)
        metrics.record_hit(spec.repo_id) if hit is not None else metrics.record_miss(spec.repo_id)
        if hit is None:
            if spec.source != "hub" and spec.local_dir is not None:
                return self.install(spec, spec.local_dir)
            if not download or self.settings.offline:
                raise OfflineError(spec.name, "the model is not in the cache" + (
                    " and offline mode is on" if self.settings.offline else ""))
            if not self.settings.download.auto_download:
                raise OfflineError(spec.name, "the model is not in the cache and download.auto_download is false "
                                              "(only an explicit `modelcache pull` downloads)")
            hit = self.pull(spec, revision, retries=retries)
        else:
            report = self.verify(spec, revision=revision)
            if not report.ok:
                if self.settings.offline or self.store.read_only:
                    first = next(iter(report.failures.items()))
                    raise IntegrityError(first[0], "verify", detail=first[1])
                log.warning("%s failed verification (%s); fetching it again", spec.name, report.failures)
                hit = self.puller.pull(spec, revision, retries=retries)  # the pinned commit again
        self.store.touch(spec.repo_id)
        return LocalModel(spec, hit.commit, hit.snapshot, hit.files, hit)

    def install(self, model: str | ModelSpec, from_dir: Path, force: bool = False) -> LocalModel:
        """Copy a model directory (a bundle, the bundled package, a USB stick) into the cache."""
        spec = self.spec(model)
        from_dir = Path(from_dir)
        if not from_dir.is_dir():
            raise FileNotFoundError(f"{from_dir} is not a directory with model files")
        if not force and (hit := self.puller.cached(spec)):
            return LocalModel(spec, hit.commit, hit.snapshot, hit.files, hit)
        self.store._require_writable(f"install {spec.name}")
        t0 = time.perf_counter()
        raw: dict[str, FileExpectation] = {}
        for p in sorted(from_dir.rglob("*")):
            rel = p.relative_to(from_dir).as_posix()
            if p.is_symlink() and not p.resolve().is_relative_to(from_dir.resolve()):
                continue  # never follow a link out of the source tree
            if not p.is_file() or any(part.startswith(".") for part in Path(rel).parts):
                continue
            size = p.stat().st_size
            if rel.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE:
                raw[rel] = FileExpectation(rel, size=size, sha256=sha256_file(p))
            else:
                raw[rel] = FileExpectation(rel, size=size, blob_id=git_blob_sha1(p))
        files = select_files(spec, raw, self.settings.download.allow_pickle)
        for path, known in spec.known_sha256.items():
            if path in files and files[path].sha256 != known:
                raise IntegrityError(path, "sha256 (registry)", known, files[path].sha256,
                                     detail=f"{from_dir} does not hold the registry's {spec.name}",
                                     hint="Nothing was installed; copy the model's files again from a trusted "
                                          "source, or pull it from a Hub.")
        manifest = "\n".join(f"{p}:{e.blob_name}" for p, e in sorted(files.items()))
        commit = hashlib.sha1(manifest.encode()).hexdigest()
        with self.store.lock(spec.repo_id), self.store.staging() as staging:
            copied = [p for p, e in files.items() if not self.store.blob_path(spec.repo_id, e.blob_name).exists()]
            self.store.preflight(sum(files[p].size or 0 for p in copied), self.settings.download.disk_margin_mb)
            for path in copied:
                tmp = staging / "copy" / path
                tmp.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(from_dir / path, tmp)
                try:
                    verify_file(tmp, files[path])
                except IntegrityError as exc:
                    raise IntegrityError(path, exc.check, exc.expected, exc.actual, exc.detail,
                                         hint=f"Nothing was installed: the file changed while it was copied "
                                              f"from {from_dir}; try again once nothing writes there.") from None
                self.store.install_blob(spec.repo_id, tmp, files[path].blob_name)
            snapshot = publish(self.store, self.lockfile, repo_id=spec.repo_id, revision=spec.revision,
                               commit=commit, files=files, staging=staging, source=f"install:{from_dir}",
                               verified=copied)
        result = PullResult(spec.repo_id, spec.revision, commit, snapshot, None, files,
                            downloaded=sorted(files), bytes_downloaded=sum(e.size or 0 for e in files.values()),
                            seconds=time.perf_counter() - t0, requests_made=False)
        self._functional_after_write(spec, commit, snapshot)
        log.info("installed %s from %s as %s", spec.name, from_dir, commit[:12])
        return LocalModel(spec, commit, snapshot, files, result)

    # -- integrity ----------------------------------------------------------------------
    def verify(self, model: str | ModelSpec | None = None, revision: str | None = None,
               full: bool = False, write: bool = True) -> VerifyReport:
        """Check every file: exists, size, hash, format; ``full`` also re-hashes everything
        and runs the functional and performance tests. Bad files are quarantined (if the cache is
        writable). ``write`` False (``doctor``): nothing is written, no file is moved."""
        t0 = time.perf_counter()
        spec = self.spec(model)
        revision = revision or spec.revision
        locked = self.lockfile.get(spec.repo_id, revision)
        commit = locked.commit if locked else self.store.resolve(spec.repo_id, revision)
        report = VerifyReport(spec.name, spec.repo_id, commit, ok=False)
        if not commit:
            report.failures["*"] = "not in the cache"
            report.status["*"] = vs.MISSING
            return report
        on_disk = self.store.snapshot_files(spec.repo_id, commit)
        expected = dict(locked.files) if locked else {}
        for path, link in on_disk.items():
            expected.setdefault(path, expectation_from_blob(path, link))
        for path, known in spec.known_sha256.items():
            if path in expected:
                e = expected[path]
                expected[path] = FileExpectation(path, e.size, known, None)
        meta = self.store.read_meta(spec.repo_id)
        stamps: dict = meta.get("verified", {}).get(commit, {})
        mc = self.settings.model_cache
        report.due = vs.due(meta, mc.validation_interval, mc.validation_on_startup, spec.repo_id in self._validated)
        fresh = report.due is None
        if report.due and stamps and not full:
            log.info("%s: re-validating every file (%s)", spec.name, report.due)
        changed = False
        for path, exp in sorted(expected.items()):
            report.checked.append(path)
            link = self.store.snapshot_dir(spec.repo_id, commit) / path
            try:
                target = link.resolve()
                stamp = stamps.get(path)
                trusted = (not full and fresh and stamp is not None and target.exists()
                           and StatStamp.of(target).as_list() == stamp)
                if trusted and stamp is not None:
                    if exp.size is not None and stamp[0] != exp.size:
                        raise IntegrityError(path, "size", exp.size, stamp[0])
                    report.status[path] = vs.VALID
                    continue
                if target.exists():
                    report.hashed.append(path)
                    report.bytes_hashed += target.stat().st_size
                verify_file(target, exp)
                report.status[path] = vs.VALID if (exp.sha256 or exp.blob_id) else vs.UNKNOWN
                stamps[path] = StatStamp.of(target).as_list()
                changed = True
            except IntegrityError as err:
                metrics.record_validation_failure(err.check, spec.repo_id)
                report.failures[path] = err.reason
                report.status[path] = vs.file_status(err.check)
                if write and link.exists() and self.store.quarantine(spec.repo_id, link.resolve(), path):
                    report.quarantined.append(path)
                    self.store.drop_link(spec.repo_id, commit, path)
                stamps.pop(path, None)
                changed = True
            except FileNotFoundError:  # `rm` / `prune` in another process removed it while we looked
                report.failures[path] = f"{path}: exists check failed: removed while it was verified"
                report.status[path] = vs.MISSING
                stamps.pop(path, None)
                changed = True
        if full and not report.failures:
            snap = self.store.snapshot_dir(spec.repo_id, commit)
            report.performance = vs.performance(  # first: the load it times is the real one
                lambda: self._encoder(spec, commit, snap), lambda enc: len(enc.encode(["Hello world"] * 16)),
                metrics.resident_memory_bytes)
            report.functional = self.functional_check(spec, commit)
        report.ok = not report.failures
        if report.ok:
            self._validated.add(spec.repo_id)
        if write and (changed or full or report.due):
            verified = meta.get("verified", {})
            verified[commit] = stamps
            updates = {"verified": verified, "validation_status": vs.overall(report.status)}
            if report.ok:
                updates["last_validated"] = iso_now()
            self.store.update_meta(spec.repo_id, **updates)
        report.seconds = time.perf_counter() - t0
        return report

    def functional_check(self, spec: ModelSpec, commit: str, precision: str | None = None) -> dict:
        """Load the model and embed "Hello world": finite, and of the registry's dims."""
        encoder = self._encoder(spec, commit, self.store.snapshot_dir(spec.repo_id, commit), precision)
        vec = np.asarray(encoder.encode(["Hello world"]))
        if vec.shape != (1, encoder.dims) or not np.all(np.isfinite(vec)):
            raise IntegrityError(spec.name, "functional", detail=f"'Hello world' gave shape {vec.shape}, "
                                 f"finite={bool(np.all(np.isfinite(vec)))}")
        if spec.dims is not None and encoder.dims != spec.dims:
            raise IntegrityError(spec.name, "functional (dims)", spec.dims, encoder.dims,
                                 hint="Fix the spec's dims, or use the model it describes.")
        norm = float(np.linalg.norm(vec[0]))
        return {"dims": encoder.dims, "norm": round(norm, 4) if math.isfinite(norm) else None,
                "fingerprint": encoder.fingerprint}

    def _functional_after_write(self, spec: ModelSpec, commit: str, snapshot: Path) -> None:
        """Load and embed "Hello world" once the files are in; recorded in the repo's metadata
        (``meta["functional"][commit]``), which ``modelcache pull`` reports."""
        if not (snapshot / "modules.json").exists() and not (snapshot / "config.json").exists():
            return  # not a model (any-file pull): nothing to embed with
        import importlib.util

        from modelcache.backends.onnx.export import onnx_available

        if importlib.util.find_spec("sentence_transformers") is None and not onnx_available():
            # a core-only install (e.g. pre-downloading in a slim Docker build stage): sizes,
            # hashes and formats are verified; the load + embed needs a backend extra
            note = ('no backend extra installed (modelcache[torch] or modelcache[onnx]): the functional '
                    '"Hello world" check runs at first load')
            log.info("%s@%s: %s", spec.name, commit[:12], note)
            self.store.update_meta(spec.repo_id, functional={commit: {"deferred": note, "at": iso_now()}})
            return
        try:
            try:
                result = self.functional_check(spec, commit)
            except PrecisionRefusedError as refused:
                # the files are good; the configured precision is not for this model or machine: the
                # model is checked (and exported) at fp32, and loading at that precision raises this
                log.warning("%s", refused)
                result = self.functional_check(spec, commit, "fp32") | {"precision_refused": str(refused)}
            except PoolFullError as full:  # eviction_policy manual, pool full: not loaded now, nor unlocked
                log.warning("%s@%s: functional check deferred: %s", spec.name, commit[:12], full)
                result = {"deferred": f"the loaded-model pool is full ({full})"[:500]}
        except Exception as exc:  # noqa: BLE001 - any load failure: the model does not work, whatever raised
            # no lock entry may claim a model that cannot load: drop it, keep the files for a look
            self.lockfile.remove(spec.repo_id, commit=commit)
            reason = exc.reason if isinstance(exc, IntegrityError) else f"{type(exc).__name__}: {exc}"
            self.store.update_meta(spec.repo_id, functional={commit: {"failed": reason[:500], "at": iso_now()}})
            if isinstance(exc, (IntegrityError, UnsafeFileError, BackendUnavailableError)):
                raise  # already says what is wrong and what to do
            raise IntegrityError(spec.name, "functional (load and embed 'Hello world')", detail=reason[:500],
                                 hint=f"Nothing was locked: the files stay in the cache unlocked; fix or replace "
                                      f"the model, then `modelcache pull {spec.name}` again (or `modelcache rm "
                                      f"{spec.name}`).") from None
        self.store.update_meta(spec.repo_id, functional={commit: result | {"at": iso_now()}})

    # -- loading ------------------------------------------------------------------------
    def fingerprint(self, spec: ModelSpec, path: Path, dims: int | None = None) -> str:
        return fp.for_spec(spec, path, dims)

    def _encoder(self, spec: ModelSpec, commit: str, path: Path, precision: str | None = None):
        """The pooled encoder for one snapshot (loaded once; LRU / idle unload by the pool)."""
        from modelcache.backends.factory import load_encoder

        emb = self.settings.embedding
        quantize = precision or emb.precision
        key = (spec.repo_id, commit, emb.backend, emb.device, quantize, spec.query_prompt, spec.document_prompt,
               spec.normalize, spec.max_seq_length, str(path))

        def build():
            t0 = time.perf_counter()
            encoder = load_encoder(LocalModel(spec, commit, Path(path), {}), self.settings, emb.backend,
                                   precision=quantize, fingerprint=self.fingerprint(spec, path))
            log.info("loaded %s (%s, %s) in %.2fs", spec.name, commit[:12], getattr(encoder, "backend", "?"),
                     time.perf_counter() - t0)
            metrics.observe_load(spec.name, time.perf_counter() - t0)
            return encoder

        return self.pool.get(key, build)

    def load(self, model: str | ModelSpec | None = None, revision: str | None = None,
             retries: int | None = None):
        """An :class:`~modelcache.backends.Encoder` for the model (pulled and verified if needed).

        Encoders live in ``self.pool`` (:class:`~modelcache.backends.pool.ModelPool`): loaded once,
        shared, evicted LRU under ``embedding.max_loaded_models``, unloaded after
        ``embedding.keep_alive_s`` idle; ``mgr.pool.preload(names)`` warms them at start.
        """
        local = self.ensure(model, revision, retries=retries)
        encoder = self._encoder(local.spec, local.commit, local.path)
        if local.spec.dims is not None and encoder.dims != local.spec.dims:
            raise IntegrityError(local.spec.name, "dims (registry vs model)", local.spec.dims, encoder.dims,
                                 hint="Fix the spec's dims, or use the model it describes.")
        if self.preloading is None and self.settings.embedding.preload_models:
            self.preloading = start_preload(self.pool, self.settings.embedding.preload_models)
        return encoder

    # -- housekeeping -------------------------------------------------------------------
    def remove(self, model: str | ModelSpec) -> bool:
        spec = self.spec(model)
        removed = self.store.remove(spec.repo_id)
        self.lockfile.remove(spec.repo_id)
        return removed

    def info(self, model: str | ModelSpec) -> dict:
        spec = self.spec(model)
        out = {"spec": spec.to_dict(), "cached": False}
        locked = self.lockfile.get(spec.repo_id, spec.revision)
        commit = locked.commit if locked else self.store.resolve(spec.repo_id, spec.revision)
        if commit:
            snap = self.store.snapshot_dir(spec.repo_id, commit)
            out.update(cached=snap.is_dir(), commit=commit, snapshot=str(snap),
                       locked=locked is not None, pinned=bool(self.store.read_meta(spec.repo_id).get("pinned")),
                       files={p: e.to_dict() for p, e in (locked.files if locked else {}).items()},
                       meta={k: v for k, v in self.store.read_meta(spec.repo_id).items() if k != "verified"})
            if snap.is_dir():
                out["fingerprint"] = self.fingerprint(spec, snap)
        return out


__all__ = ["ModelManager", "LocalModel", "VerifyReport", "UnknownModelError"]
