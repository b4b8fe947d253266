"""docs/alerts.yml: valid rules for the spec's alerting conditions, using only metrics that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

prometheus_client = pytest.importorskip("prometheus_client")

from modelcache import metrics  # noqa: E402

RULES = Path(__file__).resolve().parents[2] / "docs" / "alerts.yml"
#: the spec's alerting conditions -> the alert covering each
CONDITIONS = {"download failures over a threshold": "ModelcacheDownloadFailures",
              "cache corruption": "ModelcacheCacheCorruption", "load failures": "ModelcacheModelLoadFailures",
              "memory over limit": "ModelcacheMemoryOverLimit", "low disk": "ModelcacheLowDisk"}


def rules() -> list[dict]:
    data = yaml.safe_load(RULES.read_text("utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def exported_names() -> set[str]:
    """Every series name a modelcache Metrics registry can expose (with _total, _bucket, ... suffixes)."""
    m = metrics.Metrics(prometheus_client.CollectorRegistry())
    return set(m.registry._names_to_collectors)


def test_every_condition_has_an_alert() -> None:
    names = {r["alert"] for r in rules()}
    missing = {cond: alert for cond, alert in CONDITIONS.items() if alert not in names}
    assert not missing


def test_every_rule_is_complete() -> None:
    for rule in rules():
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}, rule.get("alert")
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


def test_every_metric_an_alert_uses_exists() -> None:
    exported = exported_names()
    used = {name for rule in rules() for name in re.findall(r"\bmodelcache_[a-z_]+", rule["expr"])}
    assert used and not used - exported, sorted(used - exported)


def test_label_matchers_use_labels_the_metric_has() -> None:
    m = metrics.Metrics(prometheus_client.CollectorRegistry())
    labels = {c._name: set(c._labelnames) for c in m.registry._collector_to_names if hasattr(c, "_labelnames")}
    for rule in rules():
        for name, matchers in re.findall(r"\b(modelcache_[a-z_]+)\{([^}]*)\}", rule["expr"]):
            base = re.sub(r"_(total|bucket|count|sum)$", "", name)
            for label in re.findall(r"([a-z_]+)\s*(?:=~|!=|=)", matchers):
                assert label in labels[base] | {"le"}, (rule["alert"], name, label)
