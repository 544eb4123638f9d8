"""The observability profile's files (deploy/observability/): Prometheus scrapes the six
services, Grafana finds its data source, and every metric the dashboard or an alert asks for
is one the code defines, under the name Prometheus stores it by."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

from choreo.web.ops import HttpMetrics

REPOSITORY = Path(__file__).resolve().parents[3]
OBSERVABILITY = REPOSITORY / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "choreo.json"
ALERTS = OBSERVABILITY / "alerts.yml"
PACKAGES = (
    "choreo",
    "gateway_service",
    "user_service",
    "order_service",
    "payment_service",
    "inventory_service",
    "notification_service",
)
SERVICES = ("gateway", "user", "order", "payment", "inventory", "notification")

# The system's own metric names: the kit's and services' (choreo_*, gateway_*) and the kit's
# HTTP metrics. PromQL's functions, keywords and Grafana's $__ variables never match these.
METRIC_NAME = re.compile(r"\b(?:choreo|gateway|http)_[a-z_]+\b")
# A module-level prometheus_client metric: `NAME = Counter(`, `NAME = Histogram(`...
METRIC_DEFINITION = re.compile(r"^[A-Z_]+ = (?:Counter|Gauge|Histogram|Summary|Info)\(", re.M)

# What Prometheus stores for each kind of metric, by the suffix it adds to the family's name.
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def modules_defining_metrics() -> Iterator[str]:
    for package in PACKAGES:
        for path in sorted((REPOSITORY / package).rglob("*.py")):
            if METRIC_DEFINITION.search(path.read_text()):
                yield ".".join(path.relative_to(REPOSITORY).with_suffix("").parts)


def exposed_names(families: Iterator[Metric]) -> set[str]:
    return {family.name + suffix for family in families for suffix in SAMPLE_SUFFIXES[family.type]}


@pytest.fixture(scope="module")
def defined() -> set[str]:
    """Every sample name the services' /metrics can expose."""
    for module in modules_defining_metrics():
        importlib.import_module(module)
    return exposed_names(REGISTRY.collect()) | exposed_names(HttpMetrics().registry.collect())


def dashboard_expressions() -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query") and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(DASHBOARD.read_text()))
    return found


def alert_expressions() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_the_metric_definitions_are_found(defined: set[str]) -> None:
    assert {
        "choreo_relay_published_total",
        "choreo_consumer_records_total",
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "gateway_upstream_requests_total",
    } <= defined


@pytest.mark.parametrize(
    ("source", "expressions"),
    [("dashboard", dashboard_expressions()), ("alerts", alert_expressions())],
)
def test_every_metric_queried_is_one_the_code_defines(
    source: str, expressions: list[str], defined: set[str]
) -> None:
    assert expressions, f"no expressions found in the {source}"
    queried = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert queried - defined == set(), f"the {source} queries metrics nothing defines"


def test_the_dashboard_shows_the_saga_the_pipeline_dead_letters_and_http() -> None:
    queried = {name for expr in dashboard_expressions() for name in METRIC_NAME.findall(expr)}
    assert {
        "choreo_saga_outcomes_total",  # throughput
        "choreo_saga_duration_seconds_bucket",  # latency percentiles
        "choreo_consumer_lag_records",
        "choreo_outbox_unpublished_rows",
        "choreo_consumer_dead_letters_total",
        "http_requests_total",
        "http_request_duration_seconds_bucket",
    } <= queried


def test_every_panel_reads_the_provisioned_data_source() -> None:
    datasources = yaml.safe_load(
        (OBSERVABILITY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    uids = {source["uid"] for source in datasources}
    panels = json.loads(DASHBOARD.read_text())["panels"]
    queried = [p for p in panels if p["type"] != "row"]
    assert queried
    for panel in queried:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert all(t["datasource"]["uid"] in uids for t in panel["targets"]), panel["title"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"


def test_prometheus_scrapes_the_six_services_with_the_ops_token() -> None:
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    targets = {
        target: group["labels"]["service"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert targets == {f"{service}:8000": service for service in SERVICES}
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"
    assert job["authorization"]["credentials_file"]
    assert config["rule_files"] == [ALERTS.name]
