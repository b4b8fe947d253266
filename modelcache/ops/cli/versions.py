"""``modelcache versions | upgrade | rollback``: model versions (logic in :mod:`modelcache.ops.versions`).

``modelcache rm MODEL --revision REV`` (in :mod:`.models`) removes one old version.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from modelcache.errors import ModelCacheError
from modelcache.ops.cli.common import ConfigOpt, JsonOpt, _emit, _fail, _manager, app, console

ModelArg = Annotated[str, typer.Argument(help="Registry name, alias or Hub repo id.")]


@app.command("versions")
def versions_(model: ModelArg, as_json: JsonOpt = False, config: ConfigOpt = None):
    """The cached versions of a model (which is active), what upgrades replaced, what the Hub had last time."""
    from modelcache.ops.versions import versions

    try:
        data = versions(_manager(config), model)
    except (ModelCacheError, OSError) as exc:
        _fail(as_json, exc)

    def render():
        table = Table(title=f"{data['repo_id']}@{data['revision']}")
        for col in ("commit", "active", "locked"):
            table.add_column(col)
        for v in data["cached"]:
            table.add_row(v["commit"], "[bold]◀[/bold]" if v["active"] else "", "yes" if v["locked"] else "no")
        console.print(table)
        for h in data["history"]:
            console.print(f"  {h['commit'][:12]} → {h['replaced_by'][:12]} (fingerprint {h.get('fingerprint')})",
                          highlight=False)
        revs = ", ".join(f"{r['name']} ({r['kind']})" for r in data["available_revisions"] or []) or "unknown"
        console.print(f"on the Hub: {revs}; last checked {data['last_update_check'] or 'never'} "
                      "(`modelcache outdated` checks)", highlight=False)

    _emit(as_json, data, render)


def _render_comparison(c: dict) -> None:
    table = Table(title=f"probe set: {c['probes']} texts, top-{c['k']} neighbours")
    for col in ("probe", "cosine old/new", f"top-{c['k']} agreement"):
        table.add_column(col, overflow="fold")
    for p in c["per_probe"]:
        table.add_row(p["text"], "-" if p["cosine"] is None else f"{p['cosine']:.4f}", f"{p['topk_agreement']:.2f}")
    console.print(table)
    cos = ("n/a (dims changed)" if c["mean_cosine"] is None
           else f"mean {c['mean_cosine']:.4f}, min {c['min_cosine']:.4f}")
    console.print(f"dims {c['dims_old']} → {c['dims_new']}; cosine {cos}; top-{c['k']} agreement "
                  f"{c['topk_agreement']:.2f}", highlight=False)


@app.command()
def upgrade(model: ModelArg,
            check: Annotated[bool, typer.Option("--check", help="Pull and compare only; do not switch.")] = False,
            to: Annotated[Optional[str], typer.Option("--to", help="Branch, tag or commit to move to "
                                                      "(default: where the locked revision is now).")] = None,
            endpoint: Annotated[Optional[list[str]],
                                typer.Option(help="Hub or mirror URL; repeat for failover.")] = None,
            min_cosine: Annotated[Optional[float], typer.Option(
                "--min-cosine", help="Refuse to switch below this mean probe cosine.")] = None,
            as_json: JsonOpt = False, config: ConfigOpt = None):
    """Pull the new version into the cache, compare it with the active one on a fixed probe set
    (cosine per probe, top-k agreement), then switch the lock entry (not with --check)."""
    from modelcache.ops.versions import upgrade as run

    try:
        out = run(_manager(config), model, check=check, to=to, endpoints=endpoint or None, min_cosine=min_cosine)
    except (ModelCacheError, OSError) as exc:
        _fail(as_json, exc)

    def render():
        if out.get("current"):
            console.print(f"{out['repo_id']}@{out['target']} is current ({out['old_commit'][:12]}); nothing to do",
                          highlight=False)
            return
        console.print(f"{out['repo_id']}: active {out['old_commit'][:12]}, new {out['new_commit'][:12]} "
                      f"({out['target']} on {out['endpoint']})", highlight=False)
        _render_comparison(out["comparison"])
        if out["switched"]:
            console.print(f"switched to {out['new_commit'][:12]}; vectors made with {out['fingerprint_old']} need "
                          f"re-embedding; undo with: modelcache rollback {model}", highlight=False)
        else:
            console.print(f"not switched (--check); the new version is cached. Switch with: modelcache upgrade "
                          f"{model}", highlight=False)

    _emit(as_json, {"ok": True} | out, render)


@app.command()
def rollback(model: ModelArg,
             to: Annotated[Optional[str], typer.Option("--to", help="Commit (or cached tag) to go back to "
                                                       "(default: the version the last upgrade replaced).")] = None,
             as_json: JsonOpt = False, config: ConfigOpt = None):
    """Move the lock entry back to the previous (or a given) cached version, re-hashed first."""
    from modelcache.ops.versions import rollback as run

    try:
        out = run(_manager(config), model, to)
    except (ModelCacheError, OSError) as exc:
        _fail(as_json, exc)
    _emit(as_json, {"ok": True} | out, lambda: console.print(
        f"{out['repo_id']}: {out['from'][:12]} → {out['to'][:12]}"
        + (f" ({out['verified_files']} files verified)" if out["changed"] else " (already active)"),
        highlight=False))
