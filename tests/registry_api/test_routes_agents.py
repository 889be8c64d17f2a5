from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient

from registry_api.store import AgentIdentity


def _register(client: TestClient, **body):
    return client.post("/agents/register", json={"type": "custom", **body})


def test_register_is_idempotent_201_then_200(client: TestClient) -> None:
    first = _register(client, name="sql-bot", type="vanna", external_id="conn-7", config={"dialect": "postgres"})
    assert first.status_code == 201
    agent = first.json()
    assert agent["id"] == AgentIdentity(name="sql-bot", type="vanna", external_id="conn-7").agent_id
    assert agent["project_id"] == "default-project"
    assert agent["config"] == {"dialect": "postgres"}
    assert agent["monitoring_enabled"] is True and agent["status"] == "active"
    assert agent["created_at"].endswith("Z") and agent["last_used_at"] is None

    second = _register(client, name="sql-bot", type="vanna", external_id="conn-7")
    assert second.status_code == 200
    assert second.json() == agent


def test_register_validation_errors_name_the_fields(client: TestClient) -> None:
    response = client.post("/agents/register", json={"name": "", "type": "crewai", "extra": 1})
    assert response.status_code == 422
    fields = {tuple(error["loc"]) for error in response.json()["detail"]}
    assert {("body", "name"), ("body", "type"), ("body", "extra")} <= fields
    assert client.post("/agents/register", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    too_big = _register(client, name="big", config={"blob": "x" * 70_000})
    assert too_big.status_code == 422


def test_get_and_404_with_a_json_error(client: TestClient) -> None:
    created = _register(client, name="a").json()
    assert client.get(f"/agents/{created['id']}").json() == created
    missing = client.get("/agents/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert "not found" in missing.json()["detail"]


def test_patch_updates_and_validates(client: TestClient) -> None:
    agent = _register(client, name="a").json()
    _register(client, name="b")
    response = client.patch(
        f"/agents/{agent['id']}",
        json={"monitoring_enabled": False, "status": "inactive", "config": {"x": 1}, "name": "a2"},
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["monitoring_enabled"], body["status"], body["config"]) == ("a2", False, "inactive", {"x": 1})
    assert client.get(f"/agents/{agent['id']}").json() == body

    assert client.patch(f"/agents/{agent['id']}", json={"config": None}).json()["config"] is None
    assert client.patch(f"/agents/{agent['id']}", json={"name": "b"}).status_code == 409
    assert client.patch(f"/agents/{agent['id']}", json={"status": "deleted"}).status_code == 422
    assert client.patch(f"/agents/{agent['id']}", json={"name": None}).status_code == 422
    assert client.patch(f"/agents/{agent['id']}", json={"id": "new"}).status_code == 422
    assert client.patch("/agents/nope", json={"status": "active"}).status_code == 404


def test_list_filters_search_sort_and_pagination(client: TestClient) -> None:
    for name, type_, project in [("alpha", "vanna", "p1"), ("beta", "langflow", "p1"), ("gamma", "langflow", "p2")]:
        _register(client, name=name, type=type_, project_id=project)
    gamma = client.get("/agents", params={"search": "GAM"}).json()["items"][0]
    client.patch(f"/agents/{gamma['id']}", json={"monitoring_enabled": False})

    def names(**params) -> list[str]:
        return [a["name"] for a in client.get("/agents", params=params).json()["items"]]

    assert names(type="langflow", sort="name", order="asc") == ["beta", "gamma"]
    assert names(project_id="p1", sort="name", order="desc") == ["beta", "alpha"]
    assert names(monitoring_enabled="false") == ["gamma"]
    assert names(status="inactive") == []
    page = client.get("/agents", params={"sort": "name", "order": "asc", "limit": 1, "offset": 1}).json()
    assert (page["total"], page["limit"], page["offset"], [a["name"] for a in page["items"]]) == (3, 1, 1, ["beta"])
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"sort": "id"}, {"order": "up"}, {"type": "x"}):
        response = client.get("/agents", params=bad)
        assert response.status_code == 422, bad
        assert response.json()["detail"][0]["loc"][0] == "query"


def test_sql_injection_strings_are_plain_data(client: TestClient) -> None:
    evil = "x'; DROP TABLE agents; --"
    assert _register(client, name=evil, project_id=evil, external_id=evil).status_code == 201
    assert client.get("/agents", params={"search": evil, "project_id": evil}).json()["total"] == 1
    assert client.get(f"/agents/{evil}").status_code == 404
    assert client.get("/agents").json()["total"] == 1


def test_last_used_at_is_served_in_utc(client: TestClient) -> None:
    agent = _register(client, name="a").json()
    store = client.app.state.store
    store.record_last_used({agent["id"]: datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)})
    assert client.get(f"/agents/{agent['id']}").json()["last_used_at"] == "2026-02-03T04:05:06Z"


def test_openapi_documents_every_route(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/agents/register", "/agents", "/agents/{agent_id}", "/healthz"} <= set(paths)
    assert set(paths["/agents/{agent_id}"]) == {"get", "patch"}
