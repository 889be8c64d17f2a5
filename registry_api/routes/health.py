"""Liveness and readiness."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from registry_api.deps import get_store
from registry_api.schemas import HealthOut
from registry_api.store import AgentStore

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}})
def healthz(store: AgentStore = Depends(get_store)):
    """200 when the registry database answers, 503 otherwise."""
    try:
        store.ping()
    except Exception as error:  # any failure to reach the database means "not ready"
        log.warning("health check failed: %s", error)
        return JSONResponse(status_code=503, content={"status": "unavailable", "registry": "unreachable"})
    return HealthOut(status="ok", registry="ok")
