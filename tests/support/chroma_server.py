"""Chroma in client/server mode for the tests: ``chroma run`` (the chromadb package's CLI) on 127.0.0.1.

:meth:`stop` / :meth:`start` restart it on the same port and data path (what it persisted stays).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.hub import free_port


def chroma_cli() -> str:
    beside = Path(sys.executable).parent / "chroma"  # the venv's console script
    found = str(beside) if beside.exists() else shutil.which("chroma")
    if found is None:
        raise RuntimeError("the chroma CLI is missing: pip install chromadb (the 'chroma' extra)")
    return found


class ChromaServer:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.port = free_port()
        self.host = "127.0.0.1"
        self.log = path.parent / f"chroma-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> ChromaServer:
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen([chroma_cli(), "run", "--path", str(self.path), "--host", self.host,
                                           "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT,
                                          env=os.environ | {"ANONYMIZED_TELEMETRY": "False"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"chroma run exited {self._proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.endpoint}/api/v2/heartbeat", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"chroma run did not answer within {timeout:g} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)

    def __enter__(self) -> ChromaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
