"""Request bookkeeping: every route the app serves is counted under its own label; only unknown paths are "other"."""

import pytest
from starlette.routing import Mount

from service import api
from service.middleware import route_label
from tests.service.test_api import metric_value


def test_every_route_of_the_app_has_its_own_label(client):
    routes = [r for r in [*client.app.routes, *api.router.routes] if hasattr(r, "path")]
    assert {"/predict", "/docs", "/openapi.json", "/", "/static"} <= {r.path for r in routes}
    for route in routes:
        if isinstance(route, Mount):
            assert route_label(f"{route.path}/any/file.css") == route.path
        else:
            assert route_label(route.path) == route.path, route.path
    assert route_label("/wp-login.php") == route_label("/predictx") == "other"


@pytest.mark.parametrize(
    ("path", "label"),
    [("/docs", "/docs"), ("/openapi.json", "/openapi.json"), ("/static/app.js", "/static"), ("/no/such", "other")],
)
def test_requests_are_counted_under_their_route(client, path, label):
    before = client.get("/metrics").text
    client.get(path)
    after = client.get("/metrics").text
    for status in ("2xx", "4xx"):
        delta = metric_value(after, "facegender_requests_total", route=label, status=status) - metric_value(
            before, "facegender_requests_total", route=label, status=status
        )
        assert delta == (1 if (status == "4xx") == (label == "other") else 0), (path, status)
