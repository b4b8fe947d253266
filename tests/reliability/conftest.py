"""The ``scenario`` marker of the reliability suite and the property that carries it.

``@pytest.mark.scenario("R8")`` tags a test with the issue-6 scenario it proves; the autouse
fixture below records it as the ``scenario`` user property (in junit xml too), next to the
figures a test records itself with ``record_property``. ``benchmarks/reliability_report.py``
reads both.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

MB = 1024 * 1024


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(id): the issue-6 reliability scenario (R1..R14) a test proves")


@pytest.fixture(autouse=True)
def _scenario_property(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("scenario")
    if marker is not None and marker.args:
        request.node.user_properties.append(("scenario", str(marker.args[0])))


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.fixture
def small_fs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], Path]]:
    """``small_fs(mb)``: a real filesystem of ``mb`` MiB mounted under ``tmp_path`` and made the
    cache (MODELCACHE_CACHE_DIR); unmounted after."""
    mounted: list[Path] = []

    def make(mb: int) -> Path:
        point = tmp_path / f"fs-{len(mounted)}"
        point.mkdir()
        tmpfs = _run("mount", "-t", "tmpfs", "-o", f"size={mb}m,mode=0755", "tmpfs", str(point))
        if tmpfs.returncode != 0:
            image = tmp_path / f"fs-{len(mounted)}.img"
            with open(image, "wb") as fh:
                fh.truncate(mb * MB)
            made = _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
            loop = _run("mount", "-o", "loop", str(image), str(point)) if made.returncode == 0 else made
            if loop.returncode != 0:
                pytest.skip(f"cannot mount a small filesystem here (tmpfs: {tmpfs.stderr.strip()}; "
                            f"loop ext4: {loop.stderr.strip()}); the margin-based preflight is covered by "
                            "tests/integration/test_pull.py::test_disk_preflight_fails_fast_with_numbers")
        mounted.append(point)
        monkeypatch.setenv("MODELCACHE_CACHE_DIR", str(point))
        return point

    yield make
    for point in reversed(mounted):
        if _run("umount", str(point)).returncode != 0:
            _run("umount", "-l", str(point))
