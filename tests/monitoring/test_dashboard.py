"""The Grafana dashboard and its provisioning: one datasource, a sound layout, only metrics that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import service.metrics  # noqa: F401  (registers the service's metrics in the default registry)
from tests.monitoring.queries import (
    DASHBOARDS,
    DATASOURCES,
    dashboard_panels,
    dashboard_queries,
    load_json,
    load_yaml,
    rule_queries,
    variable_queries,
)

SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}
# Prometheus adds `up` to every scrape; everything else must come from the service's own /metrics.
PROMETHEUS_SERIES = {"up"}


def exported_series() -> set[str]:
    """Every series name the service's registry can expose, including process_* and python_*."""
    names = set(PROMETHEUS_SERIES)
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES.get(family.type, ("",)))
    return names


def datasource_uid() -> str:
    (datasource,) = load_yaml(DATASOURCES)["datasources"]
    uid: str = datasource["uid"]
    return uid


@pytest.mark.parametrize("path", DASHBOARDS, ids=[path.name for path in DASHBOARDS])
def test_every_panel_and_variable_uses_the_provisioned_datasource(path: Path) -> None:
    uid = datasource_uid()
    dashboard = load_json(path)
    panels = [panel for panel in dashboard_panels(path) if panel["type"] != "row"]
    for item in [*panels, *dashboard["templating"]["list"]]:
        assert item["datasource"] == {"type": "prometheus", "uid": uid}, item.get("title", item.get("name"))
    for panel in panels:
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=[path.name for path in DASHBOARDS])
def test_panels_have_unique_ids_and_fit_the_grid_without_overlap(path: Path) -> None:
    panels = dashboard_panels(path)
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_metric_queried_is_one_the_service_exports() -> None:
    exported = exported_series()
    pattern = re.compile(r"\b((?:facegender|process|python)_\w+|up)\b")
    for item in [*dashboard_queries(), *variable_queries(), *rule_queries()]:
        for name in pattern.findall(item.expr):
            assert name in exported, f"{item.source}: {name} is not exported by the service"


def test_the_dashboard_shows_what_the_operators_need() -> None:
    exprs = "\n".join(item.expr for item in dashboard_queries())
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (route, le) (rate(facegender_request_duration_seconds" in exprs
    for needed in (
        "sum by (route, status) (rate(facegender_requests_total",
        'status="5xx"',
        "sum by (stage, le) (rate(facegender_stage_duration_seconds_bucket",
        "facegender_faces_per_image_bucket",
        "sum by (label) (rate(facegender_predictions_total",
        "facegender_requests_in_flight",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "max by (instance, name, version, sha256) (facegender_model_info",
        'result="no_face"',
    ):
        assert needed in exprs, needed
