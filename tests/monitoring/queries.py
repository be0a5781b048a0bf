"""The monitoring files and every PromQL expression in them, for the monitoring tests."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT

MONITORING = ROOT / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
RULES = MONITORING / "rules" / "facegender.yml"
RULE_TESTS = sorted((MONITORING / "tests").glob("*_test.yml"))
DASHBOARDS = sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))
DATASOURCES = MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"
ADAPTER_VALUES = ROOT / "deploy" / "k8s" / "prometheus-adapter" / "values.yaml"
# The labels Kubernetes service discovery gives each pod's series; prometheus-adapter maps them to objects.
POD_LABELS = {"namespace": "facegender", "pod": "facegender-0"}

# What the live test puts in place of Grafana's variables: a window that holds data after ~20 s of 1 s
# scrapes, and every replica.
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$instance": ".*"}

_OPERATOR = re.compile(r"(==|!=|>=|<=|>|<)(\s*bool\b)?|\b(and|or|unless)\b")
_MODIFIER = re.compile(r"\s*(on|ignoring|group_left|group_right)\s*\(")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_ABSENT = re.compile(r"absent\((.*)\)", re.DOTALL)


@dataclass(frozen=True)
class Query:
    """One expression and where it comes from."""

    source: str
    expr: str
    legend_labels: tuple[str, ...] = ()


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def operands(expr: str) -> list[str]:
    """The parts of ``expr`` between its top-level comparison and set operators, without threshold numbers.

    An alert's expression is empty while all is well; its operands (a ratio, a quantile, ``up``) are not.
    ``absent(x)`` becomes ``x``, since absent() is empty exactly when the series exists.
    """
    parts, depth, start, i = [], 0, 0, 0
    while i < len(expr):
        char = expr[i]
        if char == '"':
            i += 1
            while expr[i] != '"':
                i += 2 if expr[i] == "\\" else 1
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0 and (match := _OPERATOR.match(expr, i)):
            parts.append(expr[start:i])
            i = match.end()
            while modifier := _MODIFIER.match(expr, i):
                i = expr.index(")", modifier.end()) + 1
            start = i
            continue
        i += 1
    parts.append(expr[start:])
    stripped = [part.strip() for part in parts]
    unwrapped = [match.group(1).strip() if (match := _ABSENT.fullmatch(part)) else part for part in stripped]
    return [part for part in unwrapped if not _NUMBER.fullmatch(part)]


def concrete(expr: str) -> str:
    """``expr`` with Grafana's variables replaced by values Prometheus accepts."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(_panels(panel.get("panels", [])))
    return found


def dashboard_panels(path: Path) -> list[dict[str, Any]]:
    return _panels(load_json(path)["panels"])


def dashboard_queries() -> list[Query]:
    """Every panel target of every dashboard, with the labels its legend names."""
    queries = []
    for path in DASHBOARDS:
        for panel in dashboard_panels(path):
            for target in panel.get("targets", []):
                labels = tuple(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
                source = f"{path.stem}: {panel['title']} ({target['refId']})"
                queries.append(Query(source, target["expr"], labels))
    return queries


def variable_queries() -> list[Query]:
    """The series behind each ``label_values(series, label)`` template variable, with its label."""
    queries = []
    for path in DASHBOARDS:
        for variable in load_json(path).get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"].strip())
                assert match, f"{path.name}: variable {variable['name']} is not label_values(series, label)"
                queries.append(Query(f"{path.stem}: ${variable['name']}", match.group(1), (match.group(2),)))
    return queries


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


def rule_queries() -> list[Query]:
    """Each operand of each rule, with the labels its annotations use (those must come from the first)."""
    queries = []
    for group in load_yaml(RULES)["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule["record"]
            annotations = " ".join(rule.get("annotations", {}).values())
            labels = tuple(sorted(set(re.findall(r"\$labels\.(\w+)", annotations))))
            for index, operand in enumerate(operands(rule["expr"])):
                queries.append(Query(f"{name} operand {index + 1}", operand, labels if index == 0 else ()))
    return queries


def adapter_queries() -> list[Query]:
    """What prometheus-adapter sends Prometheus for the autoscaler: each custom rule's series query, and its
    metrics query filled in as the adapter fills it for one pod (``<<.LabelMatchers>>``, ``<<.GroupBy>>``)."""
    queries = []
    for rule in load_yaml(ADAPTER_VALUES)["rules"]["custom"]:
        name = rule["name"]["as"]
        series = re.match(r"\w+", rule["seriesQuery"])
        assert series, rule["seriesQuery"]
        matchers = ",".join(f'{label}="{value}"' for label, value in POD_LABELS.items())
        filled = (rule["metricsQuery"].replace("<<.Series>>", series.group(0))
                  .replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", "pod"))  # fmt: skip
        assert "<<" not in filled, f"{name}: a template field the test does not fill: {filled}"
        queries.append(Query(f"adapter {name}: seriesQuery", rule["seriesQuery"], tuple(POD_LABELS)))
        queries.append(Query(f"adapter {name}: metricsQuery", filled, ("pod",)))
    return queries
