"""A small client of agentmon's registry API, for integrations that register their agents."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx


class AgentmonError(RuntimeError):
    """The registry API refused a request or could not be reached; the message says why."""


@dataclass(frozen=True, slots=True)
class RegisteredAgent:
    id: str
    name: str
    type: str
    project_id: str
    external_id: str | None


class AgentmonClient:
    """``base_url`` defaults to AGENTMON_URL or http://127.0.0.1:8000; ``api_key`` to AGENTMON_API_KEY."""

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = (base_url or os.environ.get("AGENTMON_URL") or "http://127.0.0.1:8000").rstrip("/")
        key = api_key if api_key is not None else os.environ.get("AGENTMON_API_KEY")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport,
                                  headers={"X-API-Key": key} if key else {})
        self._registered: dict[tuple, RegisteredAgent] = {}

    def register(self, name: str, type: str, *, external_id: str | None = None, project_id: str | None = None,
                 config: dict[str, Any] | None = None) -> RegisteredAgent:
        """Register an agent (idempotent: the same identity returns the same row). Cached per client."""
        key = (name, type, external_id, project_id)
        cached = self._registered.get(key)
        if cached is not None:
            return cached
        body: dict[str, Any] = {"name": name, "type": type}
        if external_id is not None:
            body["external_id"] = external_id
        if project_id is not None:
            body["project_id"] = project_id
        if config is not None:
            body["config"] = config
        row = self._request("POST", "/agents/register", json=body)
        agent = RegisteredAgent(row["id"], row["name"], row["type"], row["project_id"], row.get("external_id"))
        self._registered[key] = agent
        return agent

    def _request(self, method: str, path: str, **kwargs) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise AgentmonError(f"agentmon at {self.base_url} is unreachable: {error}") from error
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:200]
            raise AgentmonError(f"{method} {path} failed with {response.status_code}: {detail}")
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AgentmonClient:
        return self

    def __exit__(self, *_) -> None:
        self.close()
