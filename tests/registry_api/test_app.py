"""Failures turn into JSON errors without stack traces, and the server keeps serving."""

from __future__ import annotations

from fastapi.testclient import TestClient

from agentmon.config import Settings
from registry_api.app import create_app


def test_database_down_gives_503_json_and_health_says_so(tmp_path) -> None:
    # Nothing listens on port 1: every database call fails.
    settings = Settings(data_dir=tmp_path, registry_url="mysql+pymysql://root@127.0.0.1:1/none")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json() == {"status": "unavailable", "registry": "unreachable"}
        response = client.get("/agents")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert response.json() == {"detail": "the registry database is unavailable; try again shortly"}
        assert "Traceback" not in response.text


def test_unexpected_errors_are_500_without_a_trace(client: TestClient) -> None:
    def explode(_agent_id: str):
        raise RuntimeError("secret internals")

    client.app.state.store.get = explode
    response = client.get("/agents/any")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert "secret" not in response.text
    assert client.get("/healthz").status_code == 200  # still serving


def test_health_ok(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "registry": "ok"}
