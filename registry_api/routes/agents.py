"""Registry routes: register, list, read and update agents."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status

from registry_api.deps import get_store, require_write_key
from registry_api.schemas import AgentList, AgentOut, AgentRegister, AgentStatus, AgentType, AgentUpdate, ErrorOut
from registry_api.store import AgentFilter, AgentIdentity, AgentNameTaken, AgentStore

router = APIRouter(prefix="/agents", tags=["agents"])

_NOT_FOUND = {404: {"model": ErrorOut, "description": "No agent has this id."}}
_UNAUTHORISED = {401: {"model": ErrorOut, "description": "An API key is configured and was not given."}}


def _agent_or_404(store: AgentStore, agent_id: str):
    agent = store.get(agent_id)
    if agent is None:
        raise HTTPException(status_code=404, detail=f"agent {agent_id} not found")
    return agent


@router.post(
    "/register",
    response_model=AgentOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(require_write_key)],
    responses={200: {"model": AgentOut, "description": "The agent already existed."}, **_UNAUTHORISED},
)
def register_agent(body: AgentRegister, response: Response, store: AgentStore = Depends(get_store)) -> AgentOut:
    """Register an agent, or return the existing one (idempotent: 201 when created, 200 otherwise)."""
    identity = AgentIdentity(
        name=body.name, type=body.type, project_id=body.project_id, external_id=body.external_id
    )
    agent, created = store.resolve_or_create(identity, config=body.config)
    if not created:
        response.status_code = status.HTTP_200_OK
    return AgentOut.of(agent)


@router.get("", response_model=AgentList)
def list_agents(
    store: AgentStore = Depends(get_store),
    type: AgentType | None = None,
    project_id: str | None = None,
    status_: Annotated[AgentStatus | None, Query(alias="status")] = None,
    monitoring_enabled: bool | None = None,
    search: Annotated[str | None, Query(max_length=255, description="Case-insensitive part of the name.")] = None,
    sort: Literal["name", "created_at", "last_used_at"] = "created_at",
    order: Literal["asc", "desc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> AgentList:
    """Agents matching the filters, one page at a time, with the total count."""
    filters = AgentFilter(
        type=type,
        project_id=project_id,
        status=status_,
        monitoring_enabled=monitoring_enabled,
        name_contains=search,
    )
    page = store.list(filters, sort=sort, descending=order == "desc", limit=limit, offset=offset)
    return AgentList(items=[AgentOut.of(a) for a in page.items], total=page.total, limit=limit, offset=offset)


@router.get("/{agent_id}", response_model=AgentOut, responses=_NOT_FOUND)
def get_agent(agent_id: str, store: AgentStore = Depends(get_store)) -> AgentOut:
    return AgentOut.of(_agent_or_404(store, agent_id))


@router.patch(
    "/{agent_id}",
    response_model=AgentOut,
    dependencies=[Depends(require_write_key)],
    responses={**_NOT_FOUND, **_UNAUTHORISED, 409: {"model": ErrorOut, "description": "The new name is taken."}},
)
def update_agent(agent_id: str, body: AgentUpdate, store: AgentStore = Depends(get_store)) -> AgentOut:
    """Change an agent's name, status, monitoring switch or config."""
    try:
        agent = store.update(agent_id, body.changes())
    except AgentNameTaken as error:
        raise HTTPException(status_code=409, detail=str(error)) from error
    if agent is None:
        raise HTTPException(status_code=404, detail=f"agent {agent_id} not found")
    return AgentOut.of(agent)
