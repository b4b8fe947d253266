"""What a Hub (or mirror) says about a repo: the commit of a revision and its files' hashes.

Both calls carry an explicit timeout (huggingface_hub's ``list_repo_tree`` has none), go through
huggingface_hub's HTTP session, headers and error mapping, and retry per :mod:`modelcache.hub.retry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from huggingface_hub import HfApi
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from modelcache.cache.integrity import FileExpectation
from modelcache.hub.retry import RetryPolicy, RetryStats


@dataclass
class RemoteRepo:
    endpoint: str
    token: str | None
    timeout: float
    policy: RetryPolicy
    stats: RetryStats

    def resolve(self, repo_id: str, revision: str) -> str:
        """The commit sha a branch, tag or sha points to."""
        api = HfApi(endpoint=self.endpoint, token=self.token)
        info = self.policy.call(
            lambda: api.model_info(repo_id, revision=revision, timeout=self.timeout),
            f"resolve {repo_id}@{revision} on {self.endpoint}", self.stats)
        if not info.sha:
            raise ValueError(f"{self.endpoint} gave no commit for {repo_id}@{revision}")
        return info.sha

    def files(self, repo_id: str, commit: str) -> dict[str, FileExpectation]:
        """Every file at ``commit`` with its size and sha256 (LFS) or git blob sha1."""
        url: str | None = f"{self.endpoint}/api/models/{repo_id}/tree/{quote(commit, safe='')}"
        headers = build_hf_headers(token=self.token)
        out: dict[str, FileExpectation] = {}
        params: dict | None = {"recursive": "true", "expand": "false"}
        while url:
            def fetch(url=url, params=params):
                response = get_session().get(url, params=params, headers=headers, timeout=self.timeout,
                                             follow_redirects=True)
                hf_raise_for_status(response)
                return response
            response = self.policy.call(fetch, f"list {repo_id}@{commit[:12]} on {self.endpoint}", self.stats)
            for item in response.json():
                if item.get("type") != "file":
                    continue
                lfs = item.get("lfs") or {}
                out[item["path"]] = FileExpectation(
                    path=item["path"], size=int(lfs.get("size", item.get("size", 0))),
                    sha256=lfs.get("oid") or lfs.get("sha256"),
                    blob_id=None if lfs else item.get("oid"))
            url = response.links.get("next", {}).get("url") if hasattr(response, "links") else None
            params = None
        return out
