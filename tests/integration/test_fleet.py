"""The fleet recipe (docs/fleet/, README "A fleet"): its compose file checked, then run on 127.0.0.1.

No Docker engine here, so the test parses docs/fleet/compose.yaml and checks what matters (the agents
mount the cache read-only, are offline, wait for the pull job to succeed, have the embedding server at
the head of their chain and their memory in PostgreSQL), then runs its services' equivalents with the
real servers: the pull job's command as the compose file writes it (the mirror's URL substituted: the
test Hub, olah, behind a counting proxy) into a shared cache; infinity-emb serving the files the job
pulled, from that cache; PostgreSQL and ``chroma run``; the agent service (docs/fleet/agent.py under
uvicorn, its compose environment) as two processes on the read-only cache. Both add memories and
query them through the shared memory; the embedding server is killed mid-run; every answer stays
right, in the same embedding space, and neither service touches the Hub or writes to the cache.
The Dockerfile's pre-pull (its BuildKit cache-mount RUN) runs too: a rebuild downloads nothing, and the
pull job on a volume seeded from the image's /models makes no request.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.support.fault_proxy import FaultProxy
from tests.support.hub import MINILM_REPO, free_port
from tests.support.infinity import InfinityServer, require_venv
from tests.support.memories import MEMORIES, SEMANTIC
from tests.support.postgres import PostgresServer

pytest.importorskip("chromadb")
pytest.importorskip("psycopg")
from tests.support.chroma_server import ChromaServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "docs" / "fleet"
#: memories added after the server is killed, and queries only they answer
LATE = {"bike": ("Bob's bike is locked at the train station.", "where is the bicycle parked?"),
        "book": ("The library book is due back on Friday.", "when must the borrowed library book be returned?")}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((FLEET / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def fleet_config() -> dict:
    return yaml.safe_load((FLEET / "modelcache.yaml").read_text())


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    return dict(env) if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def mounts(service: dict) -> dict[str, str]:
    """volume name -> 'target' or 'target:ro'."""
    return {v.split(":", 1)[0]: v.split(":", 1)[1] for v in service.get("volumes", [])}


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


# -- the compose file -----------------------------------------------------------------------------
def test_the_compose_file_wires_the_fleet(compose: dict, fleet_config: dict) -> None:
    services = compose["services"]
    assert {"mirror", "model-pull", "embedder", "postgres", "chroma", "agent"} <= set(services)
    assert "models" in compose["volumes"]
    pull, embedder, agent = services["model-pull"], services["embedder"], services["agent"]

    # one writer: the pull job, from the fleet's mirror, into the shared volume (read-write)
    assert pull["command"][:2] == ["modelcache", "pull"] and MINILM_REPO in pull["command"]
    mirror_url = urlsplit(option(pull["command"], "--endpoint"))
    olah = (FLEET / "olah.toml").read_text()
    assert mirror_url.hostname == "mirror" and f"port = {mirror_url.port}" in olah
    assert f'mirror-netloc = "mirror:{mirror_url.port}"' in olah
    assert "olah.server" in services["mirror"]["command"]
    assert pull["depends_on"]["mirror"]["condition"] == "service_healthy"
    assert mounts(pull)["models"] == env_of(pull)["MODELCACHE_CACHE_DIR"] == "/models"

    # every reader waits for the job to have succeeded and mounts the cache read-only
    for reader in (embedder, agent):
        assert reader["depends_on"]["model-pull"]["condition"] == "service_completed_successfully"
        assert mounts(reader)["models"] == "/models:ro"
    assert agent["deploy"]["replicas"] >= 2

    # the agents: offline, read-only, the config below
    env = env_of(agent)
    assert env["MODELCACHE_READ_ONLY"] == "1" and env["MODELCACHE_OFFLINE"] == env["HF_HUB_OFFLINE"] == "1"
    assert env["MODELCACHE_CACHE_DIR"] == "/models"
    assert env["MODELCACHE_CONFIG"] == "/etc/modelcache/modelcache.yaml"
    dockerfile = (FLEET / "Dockerfile").read_text()
    assert "COPY modelcache.yaml /etc/modelcache/modelcache.yaml" in dockerfile
    assert "COPY agent.py /app/agent.py" in dockerfile and option(agent["command"], "--app-dir") == "/app"
    assert "RUN --mount=type=cache,target=/buildcache" in dockerfile and "torch==2.13.0" in dockerfile
    assert fleet_config["offline"] is True and fleet_config["model_cache"]["read_only"] is True
    assert fleet_config["model_cache"]["directory"] == "/models"

    # the embedding server heads the chain: the config's first remote entry is the embedder service
    head = fleet_config["remote"][0]
    url = urlsplit(head["url"])
    assert url.hostname == "embedder" and url.port == int(option(embedder["command"], "--port"))
    assert url.path == option(embedder["command"], "--url-prefix") == "/v1" and head["api"] == "openai"
    assert head["model"] == option(embedder["command"], "--served-model-name") == fleet_config["model"]
    assert option(embedder["command"], "--model-id") == MINILM_REPO  # the job's model, from the volume
    assert env_of(embedder)["HF_HUB_CACHE"] == "/models" and env_of(embedder)["HF_HUB_OFFLINE"] == "1"

    # the memory in the postgres service; the vectors in the chroma service
    memory = urlsplit(env["MEMORY_URL"])
    pg = env_of(services["postgres"])
    assert memory.scheme == "postgresql" and memory.hostname == "postgres" and memory.port == 5432
    assert (memory.username, memory.password, memory.path) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"],
                                                              "/" + pg["POSTGRES_DB"])
    assert agent["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert env["CHROMA_HOST"] == "chroma" and env["CHROMA_PORT"] == option(services["chroma"]["command"], "--port")


def prepull_script() -> str:
    """The Dockerfile's pre-pull: the ``sh -euc '...'`` of its RUN with the /buildcache cache mount."""
    dockerfile = (FLEET / "Dockerfile").read_text()
    run = next(part for part in dockerfile.split("\nRUN ")[1:]
               if part.startswith("--mount=type=cache,target=/buildcache"))
    return run[run.index("sh -euc '") + len("sh -euc '"):run.rindex("'")]


def test_the_dockerfile_pre_pull_seeds_the_volume_and_a_rebuild_downloads_nothing(
        compose: dict, proxy: FaultProxy, tmp_path: Path) -> None:
    script = prepull_script()
    assert "modelcache pull" in script and "modelcache import" in script

    def build(body: str) -> None:  # a `docker build` step: the cache mount kept, the image's /models fresh
        body = body.replace("/buildcache", str(tmp_path / "buildcache")).replace("/models", str(tmp_path / "image"))
        body = body.replace("/tmp/model.tar.gz", str(tmp_path / "model.tar.gz"))
        env = os.environ | {"MODEL": MINILM_REPO, "PREPULL_ENDPOINT": proxy.endpoint,
                            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        done = subprocess.run(["sh", "-euc", body], env=env, capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr

    build(script)
    assert proxy.count("GET") > 0
    proxy.reset()
    build(script.splitlines()[0])  # a rebuild's pull: the pin in the cache mount names the commit
    assert proxy.count() == 0

    # the volume seeded from the image's /models: the pull job's command finds the model there, offline or not
    job = [proxy.endpoint if a.startswith("http://mirror") else a for a in compose["services"]["model-pull"]["command"]]
    done = subprocess.run([sys.executable, "-m", "modelcache", *job[1:], "--json"], capture_output=True, text=True,
                          env=os.environ | {"MODELCACHE_CACHE_DIR": str(tmp_path / "image")}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["network"] is False and proxy.count() == 0


# -- the fleet, run -------------------------------------------------------------------------------
def cache_state(cache: Path) -> dict[str, tuple[int, int]]:
    """Every file (and link) of the cache with its size and mtime: a write shows."""
    return {str(p.relative_to(cache)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in cache.rglob("*")}


class Agent:
    """docs/fleet/agent.py under uvicorn, with the compose file's command and environment."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.port = name, free_port()
        assert command[0] == "uvicorn"
        cmd = [sys.executable, "-m", "uvicorn", *command[1:]]
        cmd[cmd.index("--app-dir") + 1] = str(FLEET)
        cmd[cmd.index("--host") + 1] = "127.0.0.1"
        cmd[cmd.index("--port") + 1] = str(self.port)
        self.log = log_dir / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log_dir)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)

    def wait_serving(self, remote: bool, timeout: float = 150.0) -> dict:
        """Poll /health until the chain serves (from the remote tier when ``remote``)."""
        deadline, last = time.monotonic() + timeout, "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.read_log()}")
            try:
                resp = self.http.get("/health")
                last = resp.text
                if resp.status_code == 200 and resp.json()["tier"].startswith("remote:") == remote:
                    return resp.json()
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not serving within {timeout:g} s ({last}):\n{self.read_log()}")

    def add(self, ids: list[str], texts: list[str]) -> dict:
        resp = self.http.post("/memories", json={"texts": texts, "ids": ids})
        assert resp.status_code == 200, resp.text
        assert resp.json()["ids"] == ids
        return resp.json()

    def search(self, query: str, mode: str = "auto") -> dict:
        resp = self.http.get("/search", params={"q": query, "k": 3, "mode": mode})
        assert resp.status_code == 200, resp.text
        return resp.json()

    def read_log(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class Queriers:
    """One thread per agent asking the SEMANTIC queries in turn until the block ends; every answer kept."""

    def __init__(self, agents: list[Agent]) -> None:
        self.agents, self.stop = agents, threading.Event()
        self.answers: list[tuple[str, str, str | None, str | None, str, str]] = []  # agent, query, id, how, fp, tier
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._ask, args=(a,), daemon=True) for a in agents]

    def _ask(self, agent: Agent) -> None:
        with httpx.Client(base_url=str(agent.http.base_url), timeout=60) as http:
            step = 0
            while not self.stop.is_set():
                query = list(SEMANTIC)[step % len(SEMANTIC)]
                step += 1
                try:
                    resp = http.get("/search", params={"q": query, "k": 3})
                    found = resp.json()
                    top = found["hits"][0] if found["hits"] else {}
                    self.answers.append((agent.name, query, top.get("id"), top.get("how"), found["fingerprint"],
                                         found["tier"]))
                except (httpx.HTTPError, ValueError, KeyError) as exc:  # kept: no answer may fail
                    self.errors.append(f"{agent.name} {query}: {exc!r}")

    def wait(self, tier_ok: Callable[[str], bool], count: int = 3, timeout: float = 120.0) -> None:
        """Until every agent has answered ``count`` more queries from a tier that ``tier_ok`` accepts."""
        first, deadline = len(self.answers), time.monotonic() + timeout
        while time.monotonic() < deadline and not self.errors:
            recent = self.answers[first:]
            if all(sum(1 for x in recent if x[0] == a.name and tier_ok(x[5])) >= count for a in self.agents):
                return
            time.sleep(0.05)
        raise AssertionError(f"not {count} answers per agent within {timeout:g} s: {self.errors[:3]}")

    def __enter__(self) -> Queriers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(90)


@pytest.fixture
def chroma(tmp_path: Path) -> Iterator[ChromaServer]:
    with ChromaServer(tmp_path / "chroma-data") as server:
        yield server


def test_the_fleet_runs_offline_read_only_and_survives_the_embedding_server(
        compose: dict, fleet_config: dict, proxy: FaultProxy, postgres: PostgresServer, chroma: ChromaServer,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = require_venv()
    services = compose["services"]
    shared = tmp_path / "models"  # the `models` volume
    mirror = option(services["model-pull"]["command"], "--endpoint")

    def host_path(value: str) -> str:
        return value.replace("/models", str(shared), 1) if value.startswith("/models") else value

    # 1. the pull job: its command as written, the mirror's URL -> the test Hub (through the counting proxy)
    job = [proxy.endpoint if arg == mirror else arg for arg in services["model-pull"]["command"]]
    job_env = os.environ | {k: host_path(v) for k, v in env_of(services["model-pull"]).items()}
    done = subprocess.run([sys.executable, "-m", "modelcache", *job[1:]], env=job_env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert proxy.count("GET") > 0 and (shared / f"models--{MINILM_REPO.replace('/', '--')}").is_dir()

    # 2. the embedding server: infinity serving the job's files from the shared cache (HF_HUB_CACHE, offline)
    for key, value in env_of(services["embedder"]).items():
        monkeypatch.setenv(key, host_path(value))
    embedder = InfinityServer(venv, tmp_path, model_dir=Path(option(services["embedder"]["command"], "--model-id")))
    embedder.start()
    agents: list[Agent] = []
    try:
        # 3. N agents: the compose environment, hosts and paths substituted; endpoints at the counting proxy,
        # so that a request to the Hub would show
        # (timeout_s generous for a loaded 2-core machine; the kill is a refused connection, not a timeout)
        config = dict(fleet_config, remote=[dict(fleet_config["remote"][0], url=embedder.url, token=embedder.token,
                                                 timeout_s="60s")])
        config["model_cache"] = dict(config["model_cache"], directory=str(shared))
        (tmp_path / "modelcache.yaml").write_text(yaml.safe_dump(config))
        agent_env = {k: host_path(v) for k, v in env_of(services["agent"]).items()}
        agent_env |= {"MODELCACHE_CONFIG": str(tmp_path / "modelcache.yaml"), "MEMORY_URL": postgres.url(),
                      "CHROMA_HOST": chroma.host, "CHROMA_PORT": str(chroma.port),
                      "MODELCACHE_ENDPOINTS": proxy.endpoint, "HF_ENDPOINT": proxy.endpoint,
                      "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_CACHE"} | agent_env
        # what the services run with (the pin alone keeps a cached model off the network: the settings say why)
        shown = subprocess.run([sys.executable, "-m", "modelcache", "config", "show", "--json"], env=env,
                               capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        effective = json.loads(shown.stdout)
        assert effective["offline"] is True and effective["model_cache"]["read_only"] is True
        assert effective["model_cache"]["directory"] == str(shared) and effective["fallback"]["bundled"] is False
        assert [r["url"] for r in effective["remote"]] == [embedder.url]
        before_services = cache_state(shared)
        hub_requests = proxy.count()
        agents = [Agent(f"agent-{i}", services["agent"]["command"], env, tmp_path)
                  for i in range(services["agent"]["deploy"]["replicas"])]
        health = [a.wait_serving(remote=True) for a in agents]
        space = health[0]["fingerprint"]
        assert space and all(h["fingerprint"] == space and not h["degraded"] for h in health)

        # 4. each service adds its share of the memories; each finds every memory, its own and the other's
        ids = list(MEMORIES)
        for i, agent in enumerate(agents):
            share = ids[i::len(agents)]
            answer = agent.add(share, [MEMORIES[k] for k in share])
            assert answer["tier"].startswith("remote:") and answer["fingerprint"] == space

        def check_every_answer(tier: str) -> None:
            for agent in agents:
                for query, want in SEMANTIC.items():
                    found = agent.search(query)
                    assert found["hits"][0]["id"] == want, (agent.name, query, found)
                    assert found["hits"][0]["how"] == "vector" and found["fingerprint"] == space
                    assert found["tier"] == tier or (tier == "remote" and found["tier"].startswith("remote:"))
                assert agent.search("sunflower42", mode="keyword")["hits"][0]["id"] == "wifi"

        check_every_answer("remote")

        # 5. the embedding server dies mid-run, while both services answer queries: the local copy (same
        # space) takes over, and every answer, before, during and after, is the right memory
        with Queriers(agents) as queriers:
            queriers.wait(lambda tier: tier.startswith("remote:"))
            killed = time.monotonic()
            embedder.kill()
            queriers.wait(lambda tier: tier == "preferred")
            print(f"\nfleet: {len(queriers.answers)} answers, every agent on the local copy "
                  f"{time.monotonic() - killed:.1f} s after the kill")
        for agent in agents:
            answers = [a for a in queriers.answers if a[0] == agent.name]
            wrong = [a for a in answers if a[2] != SEMANTIC[a[1]] or a[3] != "vector" or a[4] != space]
            assert not wrong and not queriers.errors, (wrong[:3], queriers.errors[:3])
            tiers = [a[5] for a in answers]  # served remotely, then locally: one switch, never back
            switch = next(i for i, t in enumerate(tiers) if t == "preferred")
            assert switch > 0 and all(t.startswith("remote:") for t in tiers[:switch])
            assert set(tiers[switch:]) == {"preferred"}
        check_every_answer("preferred")
        for agent, (key, (text, _)) in zip(agents, LATE.items(), strict=False):
            answer = agent.add([key], [text])
            assert answer["tier"] == "preferred" and answer["fingerprint"] == space
        for agent in agents:  # each finds what the other added after the kill, by vector
            for key, (_, query) in LATE.items():
                found = agent.search(query)
                assert found["hits"][0]["id"] == key and found["hits"][0]["how"] == "vector", (agent.name, found)
        check_every_answer("preferred")

        # one space in the store: nothing re-embedded, nothing mixed; nothing pending
        for agent in agents:
            memory = agent.wait_serving(remote=False)["memory"]
            assert memory["store_fingerprints"] == {space: len(MEMORIES) + len(LATE)}
            assert memory["pending"] == 0 and memory["query_mode"] == "vector"

        # 6. the services never touched the Hub and never wrote to the shared cache
        assert proxy.count() == hub_requests
        assert cache_state(shared) == before_services
    finally:
        for agent in agents:
            agent.stop()
        embedder.kill()
    for agent in agents:  # a clean shutdown (uvicorn re-raises the SIGTERM it handled)
        assert agent.proc.returncode in (0, -signal.SIGTERM), agent.read_log()
        assert "Application shutdown complete" in agent.read_log()
