"""Versions (issue 15): the Hub's revisions in `outdated`, `upgrade --check` (probe comparison, no switch),
`upgrade`, `rollback [--to]`, `rm --revision`, against the local test Hub and real tiny models."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelcache.ops.cli.common import app
from modelcache.ops.versions import PROBES
from tests.integration.test_ops_cli import new_repo, run, use_cache
from tests.support.hub import LocalHub, files_from_dir


def test_outdated_records_and_shows_the_hubs_revisions(online: LocalHub, tiny_model_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    use_cache(monkeypatch, tmp_path / "cache")
    repo = new_repo(online, "revs", files_from_dir(tiny_model_dir))
    first = repo.head()
    repo.tag("v1.0")
    repo.branch("dev")
    run("pull", repo.repo_id)
    assert "available_revisions" not in run("info", repo.repo_id)["meta"]  # nothing asked the Hub yet
    entry = run("outdated")["models"][0]
    assert sorted((r["name"], r["kind"], r["commit"]) for r in entry["available_revisions"]) == [
        ("dev", "branch", first), ("main", "branch", first), ("v1.0", "tag", first)]
    checked = datetime.fromisoformat(entry["last_update_check"])
    assert checked.tzinfo is not None
    meta = run("info", repo.repo_id)["meta"]
    assert meta["available_revisions"] == entry["available_revisions"]
    assert meta["last_update_check"] == entry["last_update_check"]
    human = CliRunner().invoke(app, ["outdated"]).stdout  # checks again: shows the time of its own check
    assert "v1.0 (tag)" in human and f"last checked {run('info', repo.repo_id)['meta']['last_update_check']}" in human


def test_upgrade_check_compares_without_switching_then_upgrade_rollback_and_rm_revision(
        online: LocalHub, tiny_model_dir: Path, tiny_model_dir_v2: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = use_cache(monkeypatch, tmp_path / "cache")
    repo = new_repo(online, "upgrades", files_from_dir(tiny_model_dir))
    name = repo.repo_id
    first = run("pull", name)["commit"]
    second = repo.commit(files_from_dir(tiny_model_dir_v2), "new weights")
    snapshots = cache / f"models--{name.replace('/', '--')}" / "snapshots"

    # --check: the new version is pulled and compared, the lock entry stays
    checked = run("upgrade", name, "--check")
    assert (checked["old_commit"], checked["new_commit"], checked["switched"]) == (first, second, False)
    comparison = checked["comparison"]
    assert comparison["probes"] == len(PROBES) == len(comparison["cosine"]) and comparison["k"] == 3
    assert comparison["dims_old"] == comparison["dims_new"] == 32
    assert comparison["mean_cosine"] < 0.9  # other random weights: another embedding space
    assert 0.0 <= comparison["topk_agreement"] <= 1.0
    assert run("info", name)["commit"] == first and (snapshots / second).is_dir()
    assert [(v["commit"], v["active"]) for v in run("versions", name)["cached"]] == sorted(
        [(first, True), (second, False)])
    human = CliRunner().invoke(app, ["upgrade", name, "--check"])
    assert human.exit_code == 0 and "agreement" in human.stdout and "not switched" in human.stdout
    assert run("info", name)["commit"] == first

    # a threshold the new weights do not meet: refused, nothing switched
    refused = run("upgrade", name, "--min-cosine", "0.99", code=1)
    assert refused["error"] == "VersionError" and "--min-cosine" in refused["message"]
    assert run("info", name)["commit"] == first

    # upgrade switches after the comparison; the old fingerprint is recorded
    done = run("upgrade", name)
    assert done["switched"] and run("info", name)["commit"] == second
    assert [(h["commit"], h["replaced_by"]) for h in run("info", name)["meta"]["previous_fingerprints"]] == [
        (first, second)]

    # a commit that only changes the README: same embedding space on every probe
    third = repo.commit({"README.md": b"# docs only\n"}, "docs")
    same = run("upgrade", name, "--check")["comparison"]
    assert same["min_cosine"] > 0.9999 and same["topk_agreement"] == 1.0
    assert run("info", name)["commit"] == second

    # rollback: back to the version the upgrade replaced, files re-hashed
    back = run("rollback", name)
    assert (back["from"], back["to"], back["changed"]) == (second, first, True) and back["verified_files"] > 0
    assert run("info", name)["commit"] == first and run("verify", name)["ok"]
    assert run("pull", name)["commit"] == first  # a plain pull keeps the rolled-back pin, no network needed

    # --to a commit that is not cached: refused clearly, nothing changed
    missing = "0" * 40
    out = run("rollback", name, "--to", missing, code=1)
    assert out["error"] == "VersionError" and "not in the cache" in out["message"] and "modelcache pull" in out[
        "message"]
    assert run("info", name)["commit"] == first

    # rm --revision: never the active version; an inactive one goes with the blobs only it used
    out = run("rm", name, "--revision", first, code=1)
    assert out["error"] == "VersionError" and "active" in out["message"]
    removed = run("rm", name, "--revision", third[:12])
    assert removed["removed"] == third and not (snapshots / third).exists()
    assert removed["freed"] == 0  # third shares every weight blob with second
    removed = run("rm", name, "--revision", second)
    assert removed["removed"] == second and removed["freed"] > 0 and not (snapshots / second).exists()
    assert second not in run("info", name)["meta"].get("functional", {})  # its records go with it
    assert run("verify", name)["ok"] and run("info", name)["commit"] == first
    out = run("rollback", name, "--to", second, code=1)
    assert "not in the cache" in out["message"]
    run("embed", "still works", "--model", name)


def test_rollback_without_history_names_the_fix(online: LocalHub, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.hub import TINY_REPO

    use_cache(monkeypatch, tmp_path / "cache")
    run("pull", TINY_REPO)
    out = run("rollback", TINY_REPO, code=1)
    assert out["error"] == "VersionError" and "--to" in out["message"]
    out = run("rollback", "tiny-org/not-pulled", code=1)
    assert out["error"] == "VersionError" and "modelcache pull" in out["message"]
