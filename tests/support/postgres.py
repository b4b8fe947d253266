"""A real PostgreSQL server on 127.0.0.1 for the tests (Debian's ``postgresql`` package).

``initdb`` in a temp dir owned by an unprivileged user (``postgres`` if it exists, else
``nobody``; PostgreSQL refuses to run as root), password auth (scram) for a ``modelcache``
superuser, ``pg_ctl start`` on a free port, one database ``memories``. :meth:`url` gives a URL
to a fresh schema of that database (``search_path``), so every test gets empty tables cheaply.
Missing binaries: a skip, or a failure under ``CI=true`` (CI must install them: ``.ci/run``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.hub import free_port

USER, PASSWORD, DATABASE = "modelcache", "s3cret-pg-Pw", "memories"


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` with initdb, else the one holding initdb on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else None


def require_bindir() -> Path:
    bindir = find_bindir()
    if bindir is None:
        message = ("PostgreSQL's server binaries (initdb, pg_ctl) are not installed: apt-get install -y postgresql "
                   "(.ci/run does it)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return bindir


class PostgresServer:
    """initdb + pg_ctl start in a temp dir; :meth:`stop` / :meth:`start` restart it on the same port."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="modelcache-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = "postgres" if _user_exists("postgres") else "nobody"
            entry = pwd.getpwnam(user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._as = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--"]
        os.chmod(self.root, 0o700)
        pwfile = self.root / "pw"
        self._sh(["sh", "-c", f"umask 077; printf %s '{PASSWORD}' > {pwfile}"])
        self._sh([str(bindir / "initdb"), "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile),
                  "-A", "scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"])
        self.start()
        self._sh([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DATABASE],
                 env={"PGPASSWORD": PASSWORD})

    def _sh(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        proc = subprocess.run([*self._as, *cmd], capture_output=True, text=True, timeout=120,
                              env=os.environ | {"LC_ALL": "C"} | (env or {}), cwd=self.root)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")

    def start(self) -> None:
        options = (f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c full_page_writes=off "
                   "-c max_connections=200 -c shared_buffers=32MB")
        self._sh([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w",
                  "-t", "60", "-o", options, "start"])

    def stop(self, mode: str = "fast") -> None:
        self._sh([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def base_url(self, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{quote(password, safe='')}@127.0.0.1:{self.port}/{DATABASE}"

    def url(self, schema: str | None = None) -> str:
        """A URL whose tables land in a new, empty schema (created here)."""
        import psycopg

        schema = schema or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.base_url(), autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        return f"{self.base_url()}?options=-csearch_path%3D{schema}"

    def close(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
