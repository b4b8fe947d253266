"""The README's configuration reference lists every settings key with its real default."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel

from modelcache.settings import RemoteSection, Settings

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `([a-z0-9_.\[\]]+)` \| (`[^`]*`|\(required\)) \| (.+) \|$", re.M)


def keys(model: type[BaseModel], prefix: str = "") -> dict[str, object]:
    """Every leaf key of ``model`` -> its default (``"(required)"`` when it has none)."""
    out: dict[str, object] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out |= keys(annotation, f"{prefix}{name}.")
        elif name == "remote" and not prefix:
            out |= keys(RemoteSection, "remote[].")
        else:
            out[prefix + name] = "(required)" if field.is_required() else field.get_default(call_default_factory=True)
    return out


def documented() -> dict[str, str]:
    section = README.read_text("utf-8").split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return {key: default for key, default, _ in ROW.findall(section)}


def test_every_key_is_documented_and_nothing_else() -> None:
    expected, table = keys(Settings), documented()
    assert sorted(set(expected) - set(table)) == [], "missing from the README reference"
    assert sorted(set(table) - set(expected)) == [], "in the README reference but not a setting"


def test_every_default_is_the_real_one() -> None:
    expected, table = keys(Settings), documented()
    wrong = {}
    for key, cell in table.items():
        real = expected[key]
        shown = cell if cell == "(required)" else yaml.safe_load(cell.strip("`"))
        if isinstance(real, (int, float)) and not isinstance(real, bool):
            same = isinstance(shown, (int, float)) and float(shown) == float(real)
        else:
            same = shown == real
        if not same:
            wrong[key] = (cell, real)
    assert not wrong
