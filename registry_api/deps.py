"""FastAPI dependencies: the data layer and write authorisation."""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from agentmon.config import Settings
from registry_api.store import AgentStore

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
_bearer = HTTPBearer(auto_error=False)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> AgentStore:
    return request.app.state.store


def require_write_key(
    settings: Settings = Depends(get_settings),
    api_key: str | None = Depends(_api_key_header),
    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> None:
    """Writes need the API key when one is configured (X-API-Key or Authorization: Bearer)."""
    expected = settings.api_key_value
    if expected is None:
        return
    offered = api_key or (bearer.credentials if bearer else None)
    if offered is None or not hmac.compare_digest(offered.encode(), expected.encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="a valid API key is required for writes (X-API-Key or Authorization: Bearer)",
            headers={"WWW-Authenticate": "Bearer"},
        )
