"""Write authorisation with AGENTMON_API_KEY."""

from __future__ import annotations

import pytest

BODY = {"name": "a", "type": "custom"}


@pytest.fixture
def locked(make_client):
    return make_client(api_key="s3cret")


def test_writes_need_the_key(locked) -> None:
    response = locked.post("/agents/register", json=BODY)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["detail"]
    assert locked.post("/agents/register", json=BODY, headers={"X-API-Key": "wrong"}).status_code == 401
    assert locked.post("/agents/register", json=BODY, headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_either_header_form_is_accepted(locked) -> None:
    created = locked.post("/agents/register", json=BODY, headers={"X-API-Key": "s3cret"})
    assert created.status_code == 201
    agent_id = created.json()["id"]
    patch = locked.patch(f"/agents/{agent_id}", json={"status": "inactive"}, headers={"Authorization": "Bearer s3cret"})
    assert patch.status_code == 200
    assert locked.patch(f"/agents/{agent_id}", json={"status": "active"}).status_code == 401


def test_reads_stay_open(locked) -> None:
    assert locked.get("/agents").status_code == 200
    assert locked.get("/healthz").status_code == 200


def test_no_key_configured_means_open_writes(client) -> None:
    assert client.post("/agents/register", json=BODY).status_code == 201
