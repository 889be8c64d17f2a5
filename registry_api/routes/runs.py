"""Run routes: start and end an agent's run over HTTP, for agents that cannot speak OTLP."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, status

from registry_api.deps import get_store, require_write_key
from registry_api.runs import (
    EnricherRejected,
    EnricherUnavailable,
    RunAgent,
    RunBusy,
    RunClosed,
    RunNotFound,
    RunOfAnotherAgent,
    RunService,
    TooManyRuns,
)
from registry_api.runs.spans import as_text
from registry_api.schemas import ErrorOut, RunEnd, RunEnded, RunStart, RunStarted
from registry_api.store import AgentStore

router = APIRouter(prefix="/agents", tags=["runs"])

_UNAVAILABLE = {
    503: {"model": ErrorOut, "description": "The enricher did not take the span; retry after `Retry-After` s."},
    502: {"model": ErrorOut, "description": "The enricher refused the span."},
    401: {"model": ErrorOut, "description": "An API key is configured and was not given."},
}


def get_runs(request: Request) -> RunService:
    return request.app.state.runs


def _unavailable(error: EnricherUnavailable | EnricherRejected) -> HTTPException:
    if isinstance(error, EnricherRejected):
        return HTTPException(status.HTTP_502_BAD_GATEWAY, str(error))
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"{error}; retry shortly",
                         headers={"Retry-After": str(error.retry_after)})


@router.post(
    "/{agent_id}/trace/start",
    response_model=RunStarted,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(require_write_key)],
    responses={
        404: {"model": ErrorOut, "description": "No agent has this id."},
        429: {"model": ErrorOut, "description": "Too many runs are open; retry after `Retry-After` s."},
        **_UNAVAILABLE,
    },
)
def start_run(
    agent_id: str,
    body: RunStart | None = None,
    store: AgentStore = Depends(get_store),
    runs: RunService = Depends(get_runs),
) -> RunStarted:
    """Start a run of the agent. Pass the returned `traceparent` to what the run calls (LiteLLM's
    `traceparent` header or metadata) so that those calls become its children; end it with trace/end."""
    body = body or RunStart()
    agent = store.get(agent_id)
    if agent is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"agent {agent_id} not found")
    try:
        started = runs.start(
            RunAgent(agent.id, agent.name, agent.type, agent.project_id, agent.external_id),
            input_text=as_text(body.input),
            attributes=body.attributes,
            parent=body.parent(),
        )
    except TooManyRuns as error:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(error),
                            headers={"Retry-After": str(error.retry_after)}) from None
    except (EnricherUnavailable, EnricherRejected) as error:
        raise _unavailable(error) from None
    return RunStarted(trace_id=started.trace_id, span_id=started.span_id, traceparent=started.traceparent,
                      expires_at=started.expires_at)


@router.post(
    "/{agent_id}/trace/end",
    response_model=RunEnded,
    dependencies=[Depends(require_write_key)],
    responses={
        404: {"model": ErrorOut, "description": "No open run has these ids."},
        409: {"model": ErrorOut, "description": "The run already ended or expired, belongs to another agent, "
              "or is being ended by another request."},
        **_UNAVAILABLE,
    },
)
def end_run(agent_id: str, body: RunEnd, runs: RunService = Depends(get_runs)) -> RunEnded:
    """End a run: its span (with `output`, or an ERROR status with `error`) goes to the enricher. When the
    enricher cannot take it the answer is 503 and the run stays open: retry."""
    try:
        ended = runs.end(
            agent_id,
            bytes.fromhex(body.trace_id),
            bytes.fromhex(body.span_id),
            output_text=as_text(body.output),
            error=body.error,
            attributes=body.attributes,
        )
    except RunNotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
    except (RunClosed, RunOfAnotherAgent, RunBusy) as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None
    except (EnricherUnavailable, EnricherRejected) as error:
        raise _unavailable(error) from None
    return RunEnded(trace_id=ended.trace_id, span_id=ended.span_id, duration_ms=ended.duration_ms,
                    status=ended.status)
