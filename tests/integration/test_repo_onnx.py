"""A Hub repo's own ``onnx/model.onnx``: fetched by a pull when no exporter is installed (only that
file, not the quantised variants or config copies), used when it computes what the safetensors
do (compared with torch once, the verdict kept), replaced by our export when it does not."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("torch") is None:
    pytest.skip("making the repos' ONNX files needs torch and onnx", allow_module_level=True)

from modelcache.backends.factory import load_encoder  # noqa: E402
from modelcache.backends.onnx import export as onnx_export  # noqa: E402
from modelcache.manager import LocalModel, ModelManager  # noqa: E402
from modelcache.settings import load_settings  # noqa: E402
from tests.support.hub import HubRepo, files_from_dir  # noqa: E402


@pytest.fixture(scope="module")
def onnx_files(tiny_model_dir: Path, tiny_model_dir_v2: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("repo-onnx")
    onnx_export.export_onnx(tiny_model_dir, root / "v1.onnx")
    onnx_export.export_onnx(tiny_model_dir_v2, root / "v2.onnx")  # other weights: not the v1 model
    return {"v1": root / "v1.onnx", "v2": root / "v2.onnx"}


def test_pull_without_an_exporter_fetches_only_the_repos_onnx_model_and_runs_it(
        hub, tiny_model_dir, onnx_files, isolated_env, monkeypatch):
    repo = HubRepo(hub.mirrors_dir, "org/tiny-with-onnx")
    repo.commit({**files_from_dir(tiny_model_dir), "onnx/model.onnx": onnx_files["v1"],
                 "onnx/model_qint8_avx512.onnx": onnx_files["v1"], "onnx/config.json": b"{}"}, "with onnx")
    # an `onnx`-only install: onnxruntime, no torch to export with
    monkeypatch.setattr(onnx_export, "export_possible", lambda: False)
    mgr = ModelManager(load_settings({"download": {"endpoints": [hub.endpoint]}}))
    result = mgr.pull("org/tiny-with-onnx")
    got = sorted(p.relative_to(result.snapshot).as_posix() for p in result.snapshot.rglob("*") if p.is_file())
    assert "onnx/model.onnx" in got
    assert "onnx/model_qint8_avx512.onnx" not in got and "onnx/config.json" not in got
    enc = mgr.load("org/tiny-with-onnx")
    assert enc.backend == "onnx" and enc.onnx_path.as_posix().endswith("onnx/model.onnx")
    assert not list((mgr.settings.cache_dir / ".locks" / "modelcache" / "onnx").glob("*/model.onnx"))  # no export


def test_with_torch_the_repos_file_is_used_only_when_equal(tiny_model_dir, onnx_files, tmp_path, isolated_env):
    mgr = ModelManager(load_settings({"embedding": {"backend": "onnx"}}))
    reference = load_encoder(mgr.ensure(str(tiny_model_dir)), mgr.settings)  # our own export
    texts = ["Hello world", "the repo ships its own ONNX file"]
    for which, equal in (("v1", True), ("v2", False)):
        repo = tmp_path / which
        shutil.copytree(tiny_model_dir, repo)
        (repo / "onnx").mkdir()
        shutil.copyfile(onnx_files[which], repo / "onnx" / "model.onnx")
        local = LocalModel(mgr.spec(str(tiny_model_dir)), "0" * 40, repo, {})
        enc = load_encoder(local, mgr.settings, fingerprint=reference.fingerprint)
        verdict = json.loads((mgr.settings.cache_dir / ".locks" / "modelcache" / "onnx" /
                              f"{reference.fingerprint}-repo.json").read_text())
        assert verdict["equal"] is equal
        assert enc.onnx_path.as_posix().endswith("onnx/model.onnx") is equal
        np.testing.assert_allclose(enc.encode(texts), reference.encode(texts), atol=1e-5)  # v2 never leaks
