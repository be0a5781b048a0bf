"""docs/API.md is the contract: checked both ways against a live service's /openapi.json and /metrics, and its
example calls (and the README's) give the answers shown."""

from __future__ import annotations

import itertools
import json
import re
import shlex
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.routing import Mount

from service import api
from service.app import create_app
from tests.conftest import FIXTURES, ROOT
from tests.live import launch_service, stop, wait_until

API_MD = ROOT / "docs" / "API.md"
KEY = "contract-test-key"
DOCS_WITH_EXAMPLES = ("README.md", "docs/API.md")


@dataclass
class Section:
    """The tables and prose under one ``##`` / ``###`` heading pair of a Markdown file."""

    tables: list[list[list[str]]] = field(default_factory=list)
    prose: list[str] = field(default_factory=list)

    def table(self, first_column: str) -> list[list[str]] | None:
        """The rows (header dropped) of the table whose first header cell is ``first_column``."""
        found = [t[1:] for t in self.tables if t[0][0] == first_column]
        assert len(found) <= 1, f"two tables headed {first_column!r} in one section"
        return found[0] if found else None


def plain(text: str) -> str:
    return text.replace("`", "").strip()


def read_sections(text: str) -> dict[tuple[str, str], Section]:
    """Every section of a Markdown text by (``##`` heading, ``###`` heading); tables come as lists of cell rows."""
    sections: dict[tuple[str, str], Section] = {}
    h2 = h3 = ""
    fenced = in_table = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        if line.startswith("## "):
            h2, h3 = plain(line[3:]), ""
        elif line.startswith("### "):
            h3 = plain(line[4:])
        section = sections.setdefault((h2, h3), Section())
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if all(set(cell) <= set("-: ") for cell in cells):
                continue
            if not in_table:
                section.tables.append([])
            section.tables[-1].append([plain(cells[0]), *cells[1:]])
            in_table = True
        else:
            in_table = False
            section.prose.append(line)
    return sections


def schema_type(schema: dict) -> tuple[str, bool]:
    """How API.md writes a JSON schema's type (``Face``, ``array of Face``, ``integer``...), and if it is nullable."""
    if "anyOf" in schema:
        (kind,) = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return schema_type(kind)[0], len(schema["anyOf"]) > 1
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1], False
    if schema.get("type") == "array":
        return f"array of {schema_type(schema['items'])[0]}", False
    return schema["type"], False


def documented_type(cell: str) -> tuple[str, bool]:
    """A type cell as (type, optional): ``array of `Face`, optional`` -> ("array of Face", True)."""
    base, *notes = plain(cell).split(", ")
    return base, "optional" in notes


@pytest.fixture(scope="module")
def contract():
    return read_sections(API_MD.read_text())


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A real uvicorn serving the app with an API key, so /openapi.json also declares the 401s."""
    log = tmp_path_factory.mktemp("contract") / "uvicorn.log"
    process, base = launch_service(log, {"FACEGENDER_API_KEY": KEY})
    wait_until("uvicorn", lambda: httpx.get(f"{base}/readyz", timeout=1).status_code == 200, 90, process, log)
    with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=30) as client:
        yield client
    stop(process)


@pytest.fixture(scope="module")
def openapi(live):
    return live.get("/openapi.json").json()


def endpoints(contract) -> dict[str, Section]:
    return {h3: section for (h2, h3), section in contract.items() if h2 == "Endpoints" and h3}


def operations(openapi) -> dict[str, dict]:
    return {f"{method.upper()} {path}": op for path, ops in openapi["paths"].items() for method, op in ops.items()}


def test_every_operation_is_documented_and_every_documented_one_exists(contract, openapi):
    assert set(endpoints(contract)) == set(operations(openapi))


def query_parameters(name: str, section: Section, documented: dict[str, Section]) -> list[list[str]]:
    rows = section.table("name")
    if rows is not None:
        return rows
    same = [line for line in section.prose if line.startswith("Query parameters: the same as")]
    if not same:
        return []
    (line,) = same  # "Query parameters: the same as `POST /predict`."
    return query_parameters(name, documented[plain(line.split("the same as")[1]).rstrip(".")], documented)


def test_query_parameters_match_both_ways_with_their_types(contract, openapi):
    documented = endpoints(contract)
    for name, op in operations(openapi).items():
        rows = query_parameters(name, documented[name], documented)
        served = {p["name"]: schema_type(p["schema"])[0] for p in op.get("parameters", []) if p["in"] == "query"}
        assert {row[0]: plain(row[1]) for row in rows} == served, name


def test_statuses_and_bodies_match_both_ways(contract, openapi):
    schemas = openapi["components"]["schemas"]
    for name, op in operations(openapi).items():
        rows = endpoints(contract)[name].table("status")
        assert rows, f"{name} has no status table"
        assert {row[0] for row in rows} == set(op["responses"]), name
        for status, body, _ in rows:
            content = op["responses"][status].get("content", {})
            if plain(body) in schemas:
                assert content["application/json"]["schema"]["$ref"].endswith(f"/{plain(body)}"), (name, status)
            else:
                assert plain(body) in content, (name, status, content)


def test_every_object_and_field_matches_both_ways(contract, openapi):
    schemas = openapi["components"]["schemas"]
    objects = {h3: section for (h2, h3), section in contract.items() if h2 == "Objects" and h3}
    assert set(objects) == set(schemas), "a schema of /openapi.json needs its ### section under Objects, or back"
    for name, schema in schemas.items():
        rows = objects[name].table("field")
        assert rows, f"{name} has no field table"
        documented = {row[0]: documented_type(row[1]) for row in rows}
        served = {}
        for field_name, prop in schema["properties"].items():
            kind, nullable = schema_type(prop)
            served[field_name] = (kind, nullable or field_name not in schema.get("required", []))
        missing = set(served) - set(documented)
        assert not missing, f"{name} has {sorted(missing)} in /openapi.json: add a row to its table in docs/API.md"
        assert documented == served, name


def test_other_paths_are_every_served_path_outside_the_schema_and_answer(contract, openapi, live):
    app = create_app()
    routes = [r for r in [*app.routes, *api.router.routes] if hasattr(r, "path")]
    served = {f"GET {r.path}/{{file}}" for r in routes if isinstance(r, Mount)}
    served |= {f"{m} {r.path}" for r in routes if not isinstance(r, Mount) for m in r.methods - {"HEAD"}}
    rows = contract[("Other paths", "")].table("path")
    assert {row[0] for row in rows} == served - set(operations(openapi))
    for row in rows:
        path = row[0].removeprefix("GET ").replace("{file}", "app.js")
        assert live.get(path).status_code == 200, path


def metric_families(text: str) -> dict[str, tuple[str, set[str]]]:
    """Each facegender_* metric in a Prometheus exposition: its type and the label names its samples carry."""
    families = {
        name: (kind, set())
        for name, kind in re.findall(r"^# TYPE (facegender_\w+) (\w+)$", text, re.M)
        if not name.endswith("_created")  # prometheus_client's creation time of each counter and histogram
    }
    for sample, labels in re.findall(r"^(facegender_\w+)\{([^}]*)\}", text, re.M):
        if sample.endswith("_created"):
            continue
        family = next(f for f in families if sample == f or sample.startswith(f"{f}_"))
        families[family][1].update(label.split("=")[0] for label in labels.split(",") if label)
    for kind, labels in families.values():
        if kind == "histogram":
            labels.discard("le")  # the bucket bound, not a label of ours
    return families


def test_metrics_match_both_ways_with_their_types_and_labels(contract, live):
    with (FIXTURES / "astronaut.jpg").open("rb") as image:
        assert live.post("/predict", files={"image": image}).status_code == 200
    assert live.post("/predict", content=b"junk", headers={"content-type": "image/jpeg"}).status_code == 400
    served = metric_families(live.get("/metrics").text)
    rows = contract[("Metrics", "")].table("metric")
    documented = {row[0]: (row[1], {plain(label) for label in row[2].split(",") if plain(label)}) for row in rows}
    assert documented == served


def example_calls(text: str) -> list[tuple[list[str], dict]]:
    """Each ``curl`` command in a bash block that a JSON block follows: the command's words and that JSON."""
    blocks = re.findall(r"```(\w+)\n(.*?)```", text, re.S)
    return [
        (shlex.split(code.strip()), json.loads(following))
        for (language, code), (next_language, following) in itertools.pairwise(blocks)
        if language == "bash" and code.startswith("curl ") and next_language == "json"
    ]


@pytest.mark.parametrize("doc", DOCS_WITH_EXAMPLES)
def test_example_calls_give_the_answers_shown(doc, live):
    calls = example_calls((ROOT / doc).read_text())
    assert calls, f"{doc} shows no curl call with its answer"
    for words, shown in calls:
        (form,) = [w for w in words if w.startswith("image=@")]
        url = urlsplit(next(w for w in words if w.startswith("http")))
        with (ROOT / form.removeprefix("image=@")).open("rb") as image:
            answer = live.post(f"{url.path}?{url.query}", files={"image": image}).json()
        # Timings vary from call to call; everything else is the bundled model's exact answer.
        assert set(answer.pop("timings_ms")) == set(shown.pop("timings_ms"))
        assert answer == shown, (doc, words)
