"""A local Hugging Face compatible Hub for tests: git repos served by olah 0.5.4.

``HubRepo`` builds a non-bare git repo at ``<mirrors>/models/<org>/<name>`` with plain git
(no git-lfs binary): LFS files are committed as pointer text and their bytes stored under
``.git/lfs/objects``, which is all olah reads. ``OlahServer`` runs olah in offline mode over
such a mirrors directory, on a free port of 127.0.0.1.

olah 0.5.4 quirks (measured with huggingface_hub 2.4):
- A missing repo or revision answers 401 RepoNotFound (never 404); a missing file answers
  401 to HEAD but 500 to GET (a KeyError inside olah). huggingface_hub HEADs first, so it
  raises ``RepositoryNotFoundError`` for a missing *file* too.
- ``/api/models/<id>`` without a revision answers 401: use ``/api/models/<id>/revision/main``.
  Branches, tags, full and short commit shas all resolve.
- An LFS pointer is only recognised when the pointer blob is 121..149 bytes long (the
  standard pointer always is) and matches the spec text byte for byte.
- HEAD on ``/resolve/`` answers 200 with Content-Length, ETag (sha256 for LFS files, git
  blob sha1 for others) and X-Repo-Commit; it never redirects and sends no X-Linked-*.
- GET on ``/resolve/`` reads the whole file into memory and streams it chunked in 4 KiB
  pieces (about 20 MB/s: the 90 MB MiniLM takes 4-5 s), with no Content-Length; it
  ignores Range (always 200 and the full body).
- Tree listings answer a 307 to the trailing-slash URL first, built from the Host header
  (huggingface_hub follows it).
- It prints its arguments to stdout and logs to ``--log-path`` (default ``./logs`` in its
  cwd): we pass a temp dir and keep stdout/stderr in ``OlahServer.log_path``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Mapping, Sequence

logger = logging.getLogger(__name__)

LFS_PATTERNS = ("*.safetensors", "*.onnx", "*.bin", "*.pt", "*.gguf")
LFS_MIN_SIZE = 1024 * 1024
LFS_ATTRS = "filter=lfs diff=lfs merge=lfs -text"

_GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


@dataclass(frozen=True)
class FileInfo:
    """What the Hub should report for one file of one commit."""

    path: str
    size: int
    sha256: str
    git_sha1: str
    """Git blob sha1 of what is committed (the pointer text for LFS files)."""
    is_lfs: bool

    @property
    def etag(self) -> str:
        """The ETag a Hub gives: sha256 for LFS files, git blob sha1 otherwise."""
        return self.sha256 if self.is_lfs else self.git_sha1


@dataclass(frozen=True)
class CommitInfo:
    """One commit of a ``HubRepo`` and the full file listing it produced."""

    sha: str
    message: str
    files: Mapping[str, FileInfo]


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The standard git-lfs pointer text for an object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob with these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def files_from_dir(root: Path) -> dict[str, Path]:
    """All regular files under ``root`` as ``{relative posix path: Path}``, for ``commit``."""
    root = Path(root)
    return {
        p.relative_to(root).as_posix(): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def is_lfs_path(path: str, size: int) -> bool:
    """Whether a file is stored in LFS: a weights pattern or bigger than 1 MiB."""
    name = path.rsplit("/", 1)[-1]
    return size > LFS_MIN_SIZE or any(fnmatch(name, pat) for pat in LFS_PATTERNS)


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **_GIT_ENV}
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


@dataclass
class HubRepo:
    """A model repo on the test Hub, built commit by commit with plain git."""

    mirrors_dir: Path
    repo_id: str
    commits: list[CommitInfo] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mirrors_dir = Path(self.mirrors_dir)
        self.path = self.mirrors_dir / "models" / self.repo_id
        self._by_sha: dict[str, CommitInfo] = {}
        self._files: dict[str, FileInfo] = {}
        self._own_gitattributes = True
        self.path.mkdir(parents=True, exist_ok=True)
        _git(self.path, "init", "-q", "-b", "main")
        for key, value in (
            ("user.name", "modelcache tests"),
            ("user.email", "tests@modelcache.invalid"),
            ("commit.gpgsign", "false"),
            ("core.autocrlf", "false"),
        ):
            _git(self.path, "config", key, value)

    def commit(
        self, files: Mapping[str, bytes | Path], message: str, delete: Sequence[str] = ()
    ) -> str:
        """Add or replace ``files`` (and remove ``delete``) in one commit; return its sha."""
        for rel in delete:
            _git(self.path, "rm", "-q", "--", rel)
            self._files.pop(rel, None)
        for rel, content in files.items():
            if rel == ".gitattributes":
                self._own_gitattributes = False
            data = Path(content).read_bytes() if isinstance(content, Path) else bytes(content)
            self._files[rel] = self._write(rel, data)
        if self._own_gitattributes:
            self._files[".gitattributes"] = self._write(".gitattributes", self._gitattributes())
        _git(self.path, "add", "-A")
        _git(self.path, "commit", "-q", "-m", message)
        sha = self.head()
        info = CommitInfo(sha=sha, message=message, files=dict(self._files))
        self.commits.append(info)
        self._by_sha[sha] = info
        logger.debug("committed %s@%s: %d files", self.repo_id, sha[:8], len(info.files))
        return sha

    def tag(self, name: str, rev: str = "HEAD") -> None:
        """Create a lightweight tag ``name`` at ``rev``."""
        _git(self.path, "tag", name, rev)

    def branch(self, name: str, rev: str = "HEAD") -> None:
        """Create branch ``name`` at ``rev`` (without checking it out)."""
        _git(self.path, "branch", name, rev)

    def head(self) -> str:
        """Commit sha of the checked-out branch (``main``)."""
        return _git(self.path, "rev-parse", "HEAD")

    def resolve(self, rev: str) -> str:
        """Commit sha of a branch, tag or (short) sha."""
        return _git(self.path, "rev-parse", f"{rev}^{{commit}}")

    def files_at(self, rev: str = "main") -> Mapping[str, FileInfo]:
        """Every file of the commit ``rev`` resolves to, with the sizes and hashes to expect."""
        return self._by_sha[self.resolve(rev)].files

    def _write(self, rel: str, data: bytes) -> FileInfo:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        sha256 = hashlib.sha256(data).hexdigest()
        lfs = rel != ".gitattributes" and is_lfs_path(rel, len(data))
        if lfs:
            obj = self.path / ".git" / "lfs" / "objects" / sha256[:2] / sha256[2:4] / sha256
            obj.parent.mkdir(parents=True, exist_ok=True)
            obj.write_bytes(data)
            committed = lfs_pointer(sha256, len(data))
        else:
            committed = data
        target.write_bytes(committed)
        return FileInfo(rel, len(data), sha256, git_blob_sha1(committed), lfs)

    def _gitattributes(self) -> bytes:
        lines = [f"{pat} {LFS_ATTRS}" for pat in LFS_PATTERNS]
        for info in sorted(self._files.values(), key=lambda i: i.path):
            name = info.path.rsplit("/", 1)[-1]
            if info.is_lfs and not any(fnmatch(name, pat) for pat in LFS_PATTERNS):
                lines.append(f"{info.path} {LFS_ATTRS}")
        return ("\n".join(lines) + "\n").encode()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OlahServer:
    """olah serving ``mirrors_dir`` offline on 127.0.0.1, as a context manager.

    ``endpoint`` is the base URL to give huggingface_hub; ``log_path`` holds olah's
    stdout/stderr for debugging a failure.
    """

    def __init__(
        self,
        mirrors_dir: Path,
        repos_dir: Path,
        port: int | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.mirrors_dir = Path(mirrors_dir)
        self.repos_dir = Path(repos_dir)
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self.log_path = self.repos_dir / "olah-server.log"
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OlahServer:
        """Start olah and wait until it answers; raise with its log if it does not."""
        self.repos_dir.mkdir(parents=True, exist_ok=True)
        config = self.repos_dir / "olah.toml"
        config.write_text(
            "[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.port}\n"
            f'repos-path = "{self.repos_dir.as_posix()}"\n'
            f'mirrors-path = ["{self.mirrors_dir.as_posix()}"]\n'
            "\n[accessibility]\n"
            "offline = true\n"
        )
        log_dir = self.repos_dir / "logs"
        env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
        env["PYTHONUNBUFFERED"] = "1"
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "olah.server", "--config", str(config), "--log-path", str(log_dir)],
                cwd=self.repos_dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        logger.info("olah up at %s in %.1fs", self.endpoint, self.startup_seconds)
        return self

    def _probe_url(self) -> tuple[str, bool]:
        """URL to poll, and whether it must answer 200 (a repo exists to ask about)."""
        repos = sorted(p for p in (self.mirrors_dir / "models").glob("*/*") if (p / ".git").exists())
        if repos:
            repo_id = repos[0].relative_to(self.mirrors_dir / "models").as_posix()
            return f"{self.endpoint}/api/models/{repo_id}/revision/main", True
        return f"{self.endpoint}/api/models/none/none/revision/main", False

    def _wait_ready(self) -> None:
        url, need_ok = self._probe_url()
        deadline = time.monotonic() + self.startup_timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"olah exited with {self._proc.returncode}:\n{self.read_log()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                if not need_ok:
                    return
                last_error = f"HTTP {exc.code}"
            except OSError as exc:
                last_error = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(
            f"olah did not answer {url} within {self.startup_timeout}s ({last_error}):\n{self.read_log()}"
        )

    def read_log(self) -> str:
        """olah's output so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Terminate olah (kill after 5 s)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> OlahServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


TINY_REPO = "tiny-org/tiny-st"
PICKLE_REPO = "tiny-org/tiny-pickle"
MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
BROKEN_CONFIG_REPO = "tiny-org/tiny-broken-config"
#: ``config.json`` of BROKEN_CONFIG_REPO: cut off mid-object (not JSON)
BROKEN_CONFIG = b'{"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 3'


@dataclass
class LocalHub:
    """A running test Hub: where to reach it and what it holds."""

    endpoint: str
    repos: dict[str, HubRepo]
    server: OlahServer
    mirrors_dir: Path


def build_standard_repos(mirrors_dir: Path, tiny_v1: Path, tiny_v2: Path) -> dict[str, HubRepo]:
    """The repos every test can rely on.

    - ``tiny-org/tiny-st``: commit 1 = ``tiny_v1`` (tag ``v1.0``), commit 2 = ``tiny_v2`` on main.
    - ``tiny-org/tiny-pickle``: ``tiny_v1`` plus a pickled ``pytorch_model.bin``.
    - ``sentence-transformers/all-MiniLM-L6-v2``: every file of the bundled real model.
    - ``tiny-org/tiny-broken-config``: ``tiny_v1`` with a ``config.json`` that is not JSON
      (:data:`BROKEN_CONFIG`); its weights are fine.
    """
    from .tiny_model import minilm_files_dir, pickle_weights

    tiny = HubRepo(mirrors_dir, TINY_REPO)
    tiny.commit(files_from_dir(tiny_v1), "tiny model, seed 0")
    tiny.tag("v1.0")
    tiny.commit(files_from_dir(tiny_v2), "tiny model, seed 1")

    pickled = HubRepo(mirrors_dir, PICKLE_REPO)
    pickled.commit(
        {**files_from_dir(tiny_v1), "pytorch_model.bin": pickle_weights(tiny_v1)},
        "tiny model with pickle weights too",
    )

    minilm = HubRepo(mirrors_dir, MINILM_REPO)
    minilm.commit(files_from_dir(minilm_files_dir()), "all-MiniLM-L6-v2")

    broken = HubRepo(mirrors_dir, BROKEN_CONFIG_REPO)
    broken.commit({**files_from_dir(tiny_v1), "config.json": BROKEN_CONFIG}, "tiny model, config cut off")
    return {repo.repo_id: repo for repo in (tiny, pickled, minilm, broken)}
