"""Serve a local test Hub with one tiny model repo until killed (for tests/packaging/core_install.sh).

Run it with the test venv's python (olah, and torch + sentence-transformers to build the tiny
model); the client under test can be any other venv. It builds ``tiny-org/tiny-st`` (one commit,
a 2-layer BERT sentence-transformers model, safetensors only: ``tests/support/tiny_model.py``)
under ``WORKDIR``, starts olah on a free port of 127.0.0.1 (``tests/support/hub.py``), then
prints one JSON line ``{"endpoint": ..., "repo_id": ..., "commit": ...}`` to stdout (and to
``--ready-file`` if given) and stays up until SIGTERM / SIGINT.

    python tests/packaging/serve_hub.py WORKDIR [--ready-file PATH]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.hub import TINY_REPO, HubRepo, OlahServer, files_from_dir  # noqa: E402
from tests.support.tiny_model import build_tiny_st_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--ready-file", type=Path, help="also write the JSON line here (atomically)")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    work = args.workdir.resolve()
    model = build_tiny_st_model(work / "tiny-model", seed=0)
    repo = HubRepo(work / "mirrors", TINY_REPO)
    commit = repo.commit(files_from_dir(model), "tiny model, seed 0")
    with OlahServer(work / "mirrors", work / "olah") as server:
        line = json.dumps({"endpoint": server.endpoint, "repo_id": TINY_REPO, "commit": commit})
        if args.ready_file:
            tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
            tmp.write_text(line + "\n")
            tmp.replace(args.ready_file)
        print(line, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
