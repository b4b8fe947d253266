"""``modelcache export | import | prune | pin | unpin | doctor | status | outdated | embed | config | metrics``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from modelcache.errors import ModelCacheError
from modelcache.ops.cli.common import (
    ConfigOpt,
    JsonOpt,
    _emit,
    _fail,
    _manager,
    app,
    console,
)
from modelcache.settings import load_settings

_STYLE = {"ok": "green", "degraded": "yellow", "failed": "red"}

EXIT = {"ok": 0, "failed": 1, "degraded": 2}


def _render_checks(title: str, report: dict) -> None:
    table = Table(title=title, show_lines=False)
    for col in ("check", "status", "detail"):
        table.add_column(col, overflow="fold")
    for c in report["checks"]:
        table.add_row(c["name"], f"[{_STYLE[c['status']]}]{c['status']}[/]", c["detail"])
    console.print(table)
    console.print(f"overall: [{_STYLE[report['status']]}]{report['status']}[/]")


# -- bundles ------------------------------------------------------------------------------
@app.command("export")
def export_(model: Annotated[str, typer.Argument(help="Registry name, alias or Hub repo id (cached).")],
            output: Annotated[Path, typer.Option("--output", "-o", help="Bundle file to write (.tar.gz).")],
            revision: Annotated[Optional[str], typer.Option(help="Branch, tag or commit.")] = None,
            as_json: JsonOpt = False, config: ConfigOpt = None):
    """Write a cached model to an offline bundle (manifest with commit, files, sha256, sizes, spec)."""
    from modelcache.ops.bundle import export_bundle

    try:
        manifest: dict = export_bundle(_manager(config), model, output, revision,
                                       progress=None if not as_json else False)
    except (ModelCacheError, OSError) as exc:
        _fail(as_json, exc)
    data: dict[str, Any] = {"ok": True, "bundle": str(output), "bytes": output.stat().st_size} | {
        k: manifest[k] for k in ("repo_id", "revision", "commit")} | {"files": sorted(manifest["files"])}
    _emit(as_json, data, lambda: console.print(
        f"exported {data['repo_id']}@{data['revision']} ({data['commit'][:12]}), {len(data['files'])} files "
        f"→ {output} ({data['bytes'] / 1e6:.1f} MB)"))


@app.command("import")
def import_(file: Annotated[Path, typer.Argument(help="Bundle made by `modelcache export`.")],
            check: Annotated[bool, typer.Option("--check/--no-check",
                                                help="Load the model and embed a test sentence after import.")] = True,
            as_json: JsonOpt = False, config: ConfigOpt = None):
    """Install a bundle with no network: every hash is verified before anything becomes visible."""
    from modelcache.ops.bundle import import_bundle

    try:
        result = import_bundle(_manager(config), file, progress=None if not as_json else False, functional=check)
    except (ModelCacheError, OSError) as exc:
        _fail(as_json, exc)
    data = {"ok": True} | result.to_dict()
    _emit(as_json, data, lambda: console.print(
        f"imported {result.repo_id}@{result.revision} ({result.commit[:12]}), {len(result.files)} files verified"
        + (f", test embedding {result.functional['dims']} dims" if result.functional else "")
        + f"\n  {result.snapshot}"))


# -- budget -------------------------------------------------------------------------------
@app.command()
def prune(yes: Annotated[bool, typer.Option("--yes", "-y", help="Remove for real (default: only show what "
                                            "would go).")] = False,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be removed (the default; "
                                                "wins over --yes).")] = False,
          max_size_gb: Annotated[Optional[float], typer.Option(help="Override model_cache.max_size_gb.")] = None,
          max_models: Annotated[Optional[int], typer.Option(help="Override model_cache.max_models.")] = None,
          max_idle_days: Annotated[Optional[float], typer.Option(
              help="Override model_cache.max_idle_days: remove models unused this long.")] = None,
          policy: Annotated[Optional[str], typer.Option(help="lru, fifo or manual.")] = None,
          as_json: JsonOpt = False, config: ConfigOpt = None):
    """Show (or with --yes remove) what the budget and max_idle_days would evict (pinned models stay),
    partial downloads and quarantined files."""
    from modelcache.cache import budget

    dry_run = dry_run or not yes
    if policy is not None and policy not in ("lru", "fifo", "manual"):
        _fail(as_json, ValueError(f"--policy {policy!r}: allowed: lru, fifo, manual"))
    if max_idle_days is not None and not max_idle_days > 0:
        _fail(as_json, ValueError(f"--max-idle-days {max_idle_days}: must be more than 0"))
    try:
        mgr = _manager(config)
        out = budget.prune(mgr, dry_run=dry_run, max_size_gb=max_size_gb, max_models=max_models, policy=policy,
                           max_idle_days=max_idle_days)
    except (ModelCacheError, OSError) as exc:
        _fail(as_json, exc)

    def render():
        verb = "would remove" if dry_run else "removed"
        for e in out["evict"]:
            console.print(f"{verb} model {e['repo_id']} ({e['size'] / 1e6:.1f} MB, {e.get('reason')})",
                          highlight=False)
        for x in out["partials"]:
            console.print(f"{verb} partial download {x['path']} ({x['size'] / 1e6:.1f} MB)", highlight=False)
        for x in out["quarantined"]:
            console.print(f"{verb} quarantined {x['path']} ({x['size'] / 1e6:.1f} MB)", highlight=False)
        console.print(f"{out['size_before'] / 1e6:.1f} MB in {out['models_before']} models → "
                      f"{out['size_after'] / 1e6:.1f} MB in {out['models_after']}; {verb} {out['freed'] / 1e6:.1f} MB")
        if dry_run:
            console.print("dry run: nothing was removed; `modelcache prune --yes` removes it")

    _emit(as_json, {"ok": True} | out, render)


def _set_pin(model: str, pinned: bool, as_json: bool, config: Path | None) -> None:
    from modelcache.cache.budget import set_pinned

    try:
        mgr = _manager(config)
        spec = mgr.spec(model)
        set_pinned(mgr.store, spec.repo_id, pinned)
    except (ModelCacheError, OSError) as exc:
        _fail(as_json, exc)
    _emit(as_json, {"ok": True, "repo_id": spec.repo_id, "pinned": pinned},
          lambda: console.print(f"{spec.repo_id} {'pinned: never evicted' if pinned else 'unpinned'}"))


@app.command()
def pin(model: str, as_json: JsonOpt = False, config: ConfigOpt = None):
    """Never evict this model (prune and pulls over budget leave it alone)."""
    _set_pin(model, True, as_json, config)


@app.command()
def unpin(model: str, as_json: JsonOpt = False, config: ConfigOpt = None):
    """Let the budget evict this model again."""
    _set_pin(model, False, as_json, config)


# -- health -------------------------------------------------------------------------------
@app.command()
def doctor(network: Annotated[bool, typer.Option("--network/--no-network", help="Contact each endpoint.")] = True,
           load: Annotated[bool, typer.Option("--load/--no-load", help="Load the model and embed a sentence.")] = True,
           timeout: Annotated[float, typer.Option(help="Seconds per endpoint.")] = 3.0,
           repair: Annotated[bool, typer.Option("--repair", help="Let the checks write: quarantine bad files, "
                                                "install the bundled model, record stamps.")] = False,
           as_json: JsonOpt = False, config: ConfigOpt = None):
    """Cache integrity, endpoints, disk, token (never shown), model load. Exit 0 ok / 1 failed / 2 degraded.

    Read-only: nothing in the cache is written unless --repair."""
    from modelcache.ops.doctor import doctor as run

    try:
        report = run(_manager(config), endpoints=network, load=load, timeout=timeout, repair=repair)
    except (ModelCacheError, OSError) as exc:
        _fail(as_json, exc)
    _emit(as_json, report, lambda: _render_checks("modelcache doctor", report))
    raise typer.Exit(report["exit_code"])


@app.command()
def status(live: Annotated[bool, typer.Option("--live", help="Load the chain now (may download) and show the "
                                              "embedding service's own status.")] = False,
           as_json: JsonOpt = False, config: ConfigOpt = None):
    """Per tier of the configured fallback chain: could it serve now, which is active and why.

    Exit 0 ok / 1 failed / 2 degraded, like doctor. Nothing is loaded or downloaded unless --live.
    """
    from modelcache.ops.health import check_models, health

    try:
        mgr = _manager(config)
        report = health(mgr)
        check, tiers = check_models(mgr, verify=False)
        service = _live_status(mgr) if live else None
    except (ModelCacheError, OSError) as exc:
        _fail(as_json, exc)
    data = {"status": report["status"], "model": mgr.settings.model, "strategy": mgr.settings.fallback.strategy,
            "active": check.data["active"], "active_tier": check.data["active_tier"], "reasons": report["reasons"],
            "tiers": tiers, "checks": report["checks"]} | ({"service": service} if service else {})

    def render():
        table = Table(title=f"modelcache status — {data['model']}, strategy {data['strategy']}")
        for col in ("tier", "model", "can serve", "active", "why"):
            table.add_column(col, overflow="fold")
        for t in tiers:
            table.add_row(t["tier"], t["model"], "yes" if t["available"] else "no",
                          "[bold]◀[/bold]" if t["tier"] == data["active_tier"] else "", t["reason"] or "")
        console.print(table)
        if service:
            console.print(f"live: active tier {service.get('active_tier')} ({service.get('active_model')}), "
                          f"degraded={service.get('degraded')}, fingerprint {service.get('fingerprint')}",
                          highlight=False)
        console.print(f"overall: [{_STYLE[data['status']]}]{data['status']}[/]"
                      + "".join(f"\n  {r}" for r in data["reasons"]), highlight=False)

    _emit(as_json, data, render)
    raise typer.Exit(EXIT[data["status"]])


def _live_status(mgr) -> dict:
    """Activate the fallback chain (loading, downloading as the runtime would) and report it."""
    from modelcache.serving.service import EmbeddingService

    service = EmbeddingService(mgr.settings, manager=mgr, background_recovery=False)
    try:
        service.ensure_active()
    except ModelCacheError as exc:
        return service.status() | {"error": str(exc)}
    return service.status()


# -- updates ------------------------------------------------------------------------------
@app.command()
def outdated(models: Annotated[Optional[list[str]], typer.Argument(help="Models to check (default: all pins).")] = None,
             endpoint: Annotated[Optional[list[str]],
                                 typer.Option(help="Hub or mirror URL; repeat for failover.")] = None,
             check: Annotated[bool, typer.Option("--check", help="Exit 1 if any model is outdated.")] = False,
             timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 10.0,
             as_json: JsonOpt = False, config: ConfigOpt = None):
    """Models whose branch moved on the Hub. Nothing is upgraded: run `modelcache pull MODEL --upgrade`."""
    from modelcache.ops.outdated import outdated as find

    try:
        entries = find(_manager(config), models or None, endpoint or None, timeout)
    except (ModelCacheError, OSError) as exc:
        _fail(as_json, exc)
    data = {"ok": not any(e.error for e in entries), "outdated": [e.to_dict() for e in entries if e.outdated],
            "models": [e.to_dict() for e in entries]}

    def render():
        table = Table(title="modelcache outdated")
        for col in ("repo", "revision", "locked", "on the Hub", "state"):
            table.add_column(col, overflow="fold")
        for e in entries:
            state = ("[red]error[/red] " + (e.error or "")) if e.error else (
                "[yellow]outdated[/yellow]" if e.outdated else "[green]current[/green]")
            table.add_row(e.repo_id, e.revision, e.locked_commit[:12], (e.remote_commit or "-")[:12], state)
        console.print(table)
        for e in entries:
            revs = ", ".join(f"{r['name']} ({r['kind']})" for r in e.available_revisions or []) or "unknown"
            console.print(f"{e.repo_id}: the Hub has {revs}; last checked {e.last_update_check or 'never'}",
                          highlight=False, soft_wrap=True)
        for e in entries:
            if e.outdated:
                console.print(f"upgrade with: modelcache pull {e.repo_id} --revision {e.revision} --upgrade",
                              highlight=False)

    _emit(as_json, data, render)
    if not data["ok"] or (check and data["outdated"]):
        raise typer.Exit(1)


# -- quick checks -------------------------------------------------------------------------
@app.command()
def embed(text: Annotated[str, typer.Argument(help="Text to embed.")],
          model: Annotated[Optional[str], typer.Option(help="Model (default: the configured one).")] = None,
          kind: Annotated[str, typer.Option(help="query or document (selects the model's prompt).")] = "query",
          as_json: JsonOpt = False, config: ConfigOpt = None):
    """Embed one text with the cached model: a quick end-to-end check."""
    import time

    import numpy as np

    if kind not in ("query", "document"):
        _fail(as_json, ValueError(f"--kind {kind!r}: allowed: query, document"))
    try:
        mgr = _manager(config)
        t0 = time.perf_counter()
        encoder = mgr.load(model)
        vec = np.asarray(encoder.encode([text], kind=kind))[0]
        seconds = time.perf_counter() - t0
    except (ModelCacheError, OSError) as exc:
        _fail(as_json, exc)
    data = {"ok": True, "model": encoder.name, "fingerprint": encoder.fingerprint, "dims": int(vec.shape[0]),
            "norm": round(float(np.linalg.norm(vec)), 6), "seconds": round(seconds, 3), "kind": kind,
            "vector": [round(float(x), 6) for x in vec]}
    _emit(as_json, data, lambda: console.print(
        f"{encoder.name} ({encoder.fingerprint}): {data['dims']} dims, norm {data['norm']:.4f}, "
        f"{seconds:.2f}s\n  [{', '.join(f'{x:.4f}' for x in data['vector'][:8])}, ...]"))


config_app = typer.Typer(help="Effective configuration.", no_args_is_help=True)

app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(as_json: JsonOpt = False, config: ConfigOpt = None):
    """The effective settings (defaults < profile < file < environment), secrets redacted."""
    try:
        data = load_settings(config).redacted()
    except (ModelCacheError, OSError) as exc:
        _fail(as_json, exc)
    _emit(as_json, data, lambda: console.print_json(json.dumps(data, default=str)))


# -- metrics ------------------------------------------------------------------------------
@app.command("metrics")
def metrics_(port: Annotated[int, typer.Option(help="Port on the host (0: pick a free one).")] = 9464,
             host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
             once: Annotated[bool, typer.Option("--once", help="Answer one request, then exit.")] = False,
             as_json: JsonOpt = False, config: ConfigOpt = None):
    """Serve Prometheus metrics on http://HOST:PORT/metrics until Ctrl-C."""
    from modelcache import metrics
    from modelcache.ops.health import health

    try:
        mgr = _manager(config)
        m = metrics.enable()
        m.bind_cache(mgr.store)
        m.bind_health(lambda: health(mgr)["status"])
        server = metrics.serve(m, port, host)
    except (ModelCacheError, OSError) as exc:
        _fail(as_json, exc)
    bound = server.server_address[1]
    url = f"http://{host}:{bound}/metrics"
    if as_json:
        typer.echo(json.dumps({"ok": True, "url": url, "port": bound}))
    else:
        console.print(f"serving {url}" + (" (one request)" if once else " — Ctrl-C to stop"), highlight=False)
    sys.stdout.flush()
    try:
        if once:
            server.daemon_threads = False  # server_close() then waits for the answer to be sent
            server.handle_request()
        else:
            server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        metrics.disable()
