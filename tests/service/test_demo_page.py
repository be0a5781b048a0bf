def test_demo_page_and_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        assert f'"{asset}"' in page.text
        response = client.get(asset)
        assert response.status_code == 200 and kind in response.headers["content-type"]


def test_demo_page_is_not_part_of_the_api_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(path.startswith("/static") for path in paths)
    assert "/predict" in paths


def test_missing_asset_is_a_json_404(client):
    response = client.get("/static/missing.js")
    assert response.status_code == 404 and response.json() == {"detail": "Not Found"}
