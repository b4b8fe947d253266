"""``modelcache list | pull | verify | info | install | rm``: the model commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

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


@app.command("list")
def list_(as_json: JsonOpt = False, config: ConfigOpt = None):
    """The registry's models and what is cached."""
    mgr = _manager(config)
    cached = {r.repo_id: r for r in mgr.store.repos()}
    rows = []
    for spec in mgr.registry.specs():
        repo = cached.get(spec.repo_id)
        rows.append({"name": spec.name, "repo_id": spec.repo_id, "dims": spec.dims,
                     "max_seq_length": spec.max_seq_length, "approx_size_mb": spec.approx_size_mb,
                     "license": spec.license, "cached": repo is not None and bool(repo.commits),
                     "size_on_disk": repo.size if repo else 0, "default": spec.default})

    def render():
        table = Table(title=f"modelcache registry — cache {mgr.store.root}")
        for col in ("name", "repo_id", "dims", "max len", "≈MB", "license", "cached"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["name"] + (" *" if r["default"] else ""), r["repo_id"], str(r["dims"]),
                          str(r["max_seq_length"]), str(r["approx_size_mb"]), str(r["license"]),
                          f"yes ({r['size_on_disk'] / 1e6:.0f} MB)" if r["cached"] else "no")
        console.print(table)

    _emit(as_json, rows, render)


@app.command()
def pull(model: Annotated[str, typer.Argument(help="Registry name, alias or Hub repo id.")],
         revision: Annotated[Optional[str], typer.Option(help="Branch, tag or commit.")] = None,
         endpoint: Annotated[Optional[list[str]], typer.Option(help="Hub or mirror URL; repeat for failover.")] = None,
         dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be downloaded.")] = False,
         upgrade: Annotated[bool, typer.Option("--upgrade", help="Resolve the revision again (move the pin).")] = False,
         include: Annotated[Optional[list[str]],
                            typer.Option(help="Glob of files to fetch instead of the model set.")] = None,
         allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Also fetch pickle weights.")] = False,
         as_json: JsonOpt = False, config: ConfigOpt = None):
    """Download a model into the cache, verify it and pin it."""
    try:
        mgr = _manager(config)
        result = mgr.pull(model, revision, endpoints=endpoint or None, dry_run=dry_run, upgrade=upgrade,
                          include=tuple(include) if include else None, allow_pickle=allow_pickle or None)
    except (ModelCacheError, OSError) as exc:
        _fail(as_json, exc)
    # the "Hello world" check of this commit: its result, or why it waits for the first load
    functional = None if dry_run else (mgr.store.read_meta(result.repo_id).get("functional") or {}).get(result.commit)
    data = result.to_dict() | {"ok": True, "functional": functional}

    def render():
        verb = "would download" if dry_run else "downloaded"
        console.print(f"{result.repo_id}@{result.revision} → {result.commit[:12]}  "
                      f"{verb} {len(result.downloaded)} files, {result.bytes_downloaded / 1e6:.1f} MB"
                      + (f" from {result.endpoint}" if result.endpoint else " (cached, no network)")
                      + f"\n  {result.snapshot}")
        for e in result.evicted:
            console.print(f"  evicted {e['repo_id']}: {e['reason']}", highlight=False)
        if result.downloaded and not dry_run:
            console.print(f"  verified {len(result.downloaded)} files: size, hash, format", highlight=False)
        if functional and "deferred" in functional:  # plain text: the note names extras in [brackets]
            console.print(f"  functional check: {functional['deferred']}", markup=False, highlight=False)
        elif functional:
            console.print(f"  functional check: 'Hello world' → {functional.get('dims')} dims", markup=False,
                          highlight=False)

    _emit(as_json, data, render)


@app.command()
def verify(model: Annotated[Optional[str], typer.Argument(help="Model; all cached models if omitted.")] = None,
           full: Annotated[bool, typer.Option("--full",
                                              help="Re-hash every file, run the functional test and the "
                                                   "performance test (load time, memory).")] = False,
           as_json: JsonOpt = False, config: ConfigOpt = None):
    """Check cached files: presence, size, sha256 / git sha1, format (and load + embed with --full)."""
    try:
        mgr = _manager(config)
        if model:
            specs = [mgr.spec(model)]
        else:
            by_repo = {s.repo_id: s for s in reversed(mgr.registry.specs()) if s.source == "hub"}
            specs = [by_repo.get(r.repo_id) or mgr.spec(r.repo_id) for r in mgr.store.repos() if r.commits]
        reports = [mgr.verify(s, full=full) for s in specs]
    except (ModelCacheError, OSError) as exc:
        _fail(as_json, exc)
    ok = all(r.ok for r in reports)

    def render():
        colour = {"Valid": "green", "Unknown": "yellow"}
        for r in reports:
            mark = "[green]ok[/green]" if r.ok else "[red]FAILED[/red]"
            data = r.to_dict()
            console.print(f"{mark} {r.model} ({r.repo_id}@{(r.commit or '-')[:12]}): {data['validation_status']}, "
                          f"{len(r.checked)} files, {len(r.hashed)} hashed in {r.seconds:.2f}s"
                          + (f" (re-hashed: {r.due})" if r.due else ""), highlight=False)
            for path, status in sorted(r.status.items()):
                why = r.failures.get(path)
                console.print(f"   [{colour.get(status, 'red')}]{status:<9}[/] {path}" + (f": {why}" if why else ""),
                              highlight=False)
            if r.performance:
                p = r.performance
                memory = f"{p['model_memory_bytes'] / 1e6:.1f} MB" if p["model_memory_bytes"] is not None else "?"
                console.print(f"   performance: load {p['load_s']:.2f}s, embed {p['texts']} texts in "
                              f"{p['embed_s']:.3f}s, model memory {memory}, RSS {p['rss_bytes'] / 1e6:.0f} MB "
                              f"(+{p['rss_growth_bytes'] / 1e6:.0f} MB by the load)", highlight=False)
        if not reports:
            console.print("no cached models")

    _emit(as_json, {"ok": ok, "models": [r.to_dict() for r in reports]}, render)
    if not ok:
        raise typer.Exit(1)


@app.command()
def info(model: str, as_json: JsonOpt = False, config: ConfigOpt = None):
    """Everything known about a model: spec, pin, files, metadata."""
    try:
        data = _manager(config).info(model)
    except (ModelCacheError, OSError) as exc:
        _fail(as_json, exc)
    _emit(as_json, data, lambda: console.print_json(json.dumps(data, default=str)))


@app.command()
def install(model: str, from_: Annotated[Path, typer.Option("--from", help="Directory with the model files.")],
            force: bool = False, as_json: JsonOpt = False, config: ConfigOpt = None):
    """Install a model from a local directory (no network), verified and pinned."""
    try:
        local = _manager(config).install(model, from_, force=force)
    except (ModelCacheError, OSError) as exc:
        _fail(as_json, exc)
    data = {"ok": True, "model": local.spec.name, "commit": local.commit, "snapshot": str(local.path),
            "files": sorted(local.files)}
    _emit(as_json, data, lambda: console.print(f"installed {local.spec.name} → {local.path}"))


@app.command()
def rm(model: str,
       revision: Annotated[Optional[str], typer.Option(
           help="Remove only this cached version (a commit or cached tag), not the active one.")] = None,
       as_json: JsonOpt = False, config: ConfigOpt = None):
    """Remove a model from the cache and its pin (or, with --revision, one old version)."""
    try:
        if revision is not None:
            from modelcache.ops.versions import remove_revision

            out = remove_revision(_manager(config), model, revision)
            _emit(as_json, {"ok": True} | out, lambda: console.print(
                f"removed {out['repo_id']}@{out['removed'][:12]} ({out['freed'] / 1e6:.1f} MB freed)",
                highlight=False))
            return
        removed = _manager(config).remove(model)
    except (ModelCacheError, OSError) as exc:
        _fail(as_json, exc)
    _emit(as_json, {"ok": True, "removed": removed},
          lambda: console.print(f"removed {model}" if removed else f"{model} was not cached"))
