"""registry_api/ui: the pages and their assets are served by the API itself (nothing from a CDN)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from agentmon.config import Settings
from registry_api.app import create_app


@pytest.fixture
def client(tmp_path, registry_url):
    def make(**settings) -> TestClient:
        return TestClient(create_app(Settings(data_dir=tmp_path, registry_url=registry_url, **settings)))
    return make


@pytest.mark.parametrize("path", ["/ui", "/ui/agents/some-id"])
def test_pages_say_whether_writes_need_a_key(client, path) -> None:
    with client() as api:
        page = api.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'data-write-key-required="false"' in page.text
    with client(api_key="secret") as api:
        assert 'data-write-key-required="true"' in api.get(path).text


def test_every_asset_a_page_names_is_served_locally(client) -> None:
    with client() as api:
        for path in ("/ui", "/ui/agents/x"):
            page = api.get(path).text
            assets = re.findall(r'(?:src|href)="([^"]+)"', page)
            assert assets and not [a for a in assets if a.startswith(("http:", "https:", "//"))]
            for asset in assets:
                if asset.startswith("/ui/static/"):
                    assert api.get(asset).status_code == 200, asset


def test_root_redirects_to_the_dashboard_and_unknown_assets_404(client) -> None:
    with client() as api:
        response = api.get("/", follow_redirects=False)
        assert response.status_code == 307 and response.headers["location"] == "/ui"
        assert api.get("/ui/static/nope.js").status_code == 404
        assert api.get("/ui/static/../app.py").status_code == 404


def test_live_events_without_clickhouse_is_a_json_503(client) -> None:
    with client() as api:
        response = api.get("/stats/events")
        assert response.status_code == 503 and "ClickHouse" in response.json()["detail"]
