"""Stats routes: per-agent usage, time series, runs, and a trace's span tree."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from registry_api.deps import get_store
from registry_api.schemas import ErrorOut
from registry_api.stats.store import StatsStore, Window
from registry_api.store import AgentStore

router = APIRouter(tags=["stats"])
_BUCKET = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_MAX_BUCKET_SECONDS = 2**32 - 1  # a UInt32 query parameter
_NOT_FOUND = {404: {"model": ErrorOut}}


def get_stats(request: Request) -> StatsStore:
    stats = request.app.state.stats
    if stats is None:
        raise HTTPException(503, "stats need ClickHouse: set AGENTMON_CLICKHOUSE_URL (agentmon up uses embedded chDB)")
    return stats


def window(
    from_: Annotated[datetime | None, Query(alias="from", description="Start (ISO 8601); default 24 h before `to`.")] = None,
    to: Annotated[datetime | None, Query(description="End, exclusive (ISO 8601); default now.")] = None,
) -> Window:
    end = _utc(to) if to else datetime.now(UTC)
    start = _utc(from_) if from_ else max(_EARLIEST, end - timedelta(hours=24))
    if start >= end:
        raise HTTPException(422, "`from` must be before `to`")
    return Window(start, end)


# Span times are Int64 nanoseconds since the epoch (1677-09-21 to 2262-04-11): a window reaching
# beyond is cut to what can hold spans, rather than overflowing the query parameters.
_EARLIEST = datetime(1677, 9, 22, tzinfo=UTC)
_LATEST = datetime(2262, 4, 11, tzinfo=UTC)


def _utc(moment: datetime) -> datetime:
    try:
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # its offset takes it past year 1 or 9999
        return _EARLIEST if moment.year < 2000 else _LATEST
    return min(max(moment, _EARLIEST), _LATEST)


def _known_agent(agent_id: str, store: AgentStore):
    agent = store.get(agent_id)
    if agent is None:
        raise HTTPException(404, f"agent {agent_id} not found")
    return agent


def _empty_usage(agent_id: str) -> dict[str, Any]:
    return {
        "agent_id": agent_id, "runs": 0, "llm_calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0,
        "errors": 0, "error_rate": 0.0, "p50_run_duration_ms": None, "p95_run_duration_ms": None,
        "p99_run_duration_ms": None, "last_seen": None,
    }


def _with_registry(usage: dict[str, Any], agent) -> dict[str, Any]:
    return {**usage, "name": agent.name, "type": agent.type, "project_id": agent.project_id,
            "status": agent.status, "monitoring_enabled": agent.monitoring_enabled}


@router.get("/stats/agents")
def agents_overview(
    span: Window = Depends(window),
    stats: StatsStore = Depends(get_stats),
    store: AgentStore = Depends(get_store),
) -> dict[str, Any]:
    """Usage of every registered agent in the window (agents without traffic show zeros)."""
    usage = {row["agent_id"]: row for row in stats.agent_stats(span)}
    items = [
        _with_registry(usage.get(agent.id) or _empty_usage(agent.id), agent)
        for agent in store.list(limit=10_000, sort="name", descending=False).items
    ]
    return {"from": span.start, "to": span.end, "items": items}


@router.get("/agents/{agent_id}/stats", responses=_NOT_FOUND)
def agent_stats(
    agent_id: str,
    span: Window = Depends(window),
    stats: StatsStore = Depends(get_stats),
    store: AgentStore = Depends(get_store),
) -> dict[str, Any]:
    agent = _known_agent(agent_id, store)
    rows = stats.agent_stats(span, agent_id)
    return {"from": span.start, "to": span.end, **_with_registry(rows[0] if rows else _empty_usage(agent_id), agent)}


@router.get("/agents/{agent_id}/timeseries", responses=_NOT_FOUND)
def agent_timeseries(
    agent_id: str,
    span: Window = Depends(window),
    bucket: Annotated[str, Query(description="Bucket width: 1m, 5m, 1h, 1d, ... (at least 1 minute).")] = "1h",
    stats: StatsStore = Depends(get_stats),
    store: AgentStore = Depends(get_store),
) -> dict[str, Any]:
    _known_agent(agent_id, store)
    match = _BUCKET.match(bucket)
    if match is None:
        raise HTTPException(422, "bucket must look like 30s, 5m, 1h or 1d")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 60 or seconds > _MAX_BUCKET_SECONDS or (span.end - span.start).total_seconds() / seconds > 10_000:
        raise HTTPException(422, "bucket must be at least 1m and at most 49710d, and give at most 10000 buckets")
    return {"from": span.start, "to": span.end, "bucket_seconds": seconds,
            "buckets": stats.timeseries(span, agent_id, seconds)}


@router.get("/agents/{agent_id}/traces", responses=_NOT_FOUND)
def agent_traces(
    agent_id: str,
    span: Window = Depends(window),
    status: Literal["ok", "error"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    stats: StatsStore = Depends(get_stats),
    store: AgentStore = Depends(get_store),
) -> dict[str, Any]:
    """The agent's runs, newest first."""
    _known_agent(agent_id, store)
    items, total = stats.runs(span, agent_id, status=status or "", limit=limit, offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/traces/{trace_id}", responses=_NOT_FOUND)
def trace_tree(trace_id: str, stats: StatsStore = Depends(get_stats)) -> dict[str, Any]:
    """A trace's spans as a tree; LLM calls carry model, tokens, cost, duration and status."""
    trace_id = trace_id.lower()
    if not _TRACE_ID.match(trace_id):
        raise HTTPException(422, "trace_id must be 32 hex characters")
    spans = stats.trace(trace_id)
    if not spans:
        raise HTTPException(404, f"trace {trace_id} not found")
    by_id = {span["span_id"]: {**span, "children": []} for span in spans}
    roots = []
    for node in by_id.values():
        parent = by_id.get(node["parent_span_id"])
        (parent["children"] if parent is not None else roots).append(node)
    llm_calls = [
        {key: node[key] for key in ("span_id", "name", "model", "input_tokens", "output_tokens", "cost_usd",
                                    "duration_ms", "status", "agent_id")}
        for node in by_id.values() if node["is_llm"]
    ]
    return {"trace_id": trace_id, "span_count": len(spans), "roots": roots, "llm_calls": llm_calls}
