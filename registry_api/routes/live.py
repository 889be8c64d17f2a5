"""Live updates for the dashboard: a server-sent event whenever stored spans change."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from registry_api.routes.stats import get_stats
from registry_api.stats import StatsStore
from registry_api.stats.changes import ChangeFeed

router = APIRouter(tags=["stats"])
POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
# A stream ends after this long and the browser's EventSource reconnects (after `retry`), so
# no connection is held for ever by a proxy; a server shutdown cuts streams after
# uvicorn's timeout_graceful_shutdown (set by `agentmon api` / `up`).
STREAM_SECONDS = 300.0


def get_feed(request: Request, stats: StatsStore = Depends(get_stats)) -> ChangeFeed:
    feed = getattr(request.app.state, "change_feed", None)
    if feed is None:
        feed = request.app.state.change_feed = ChangeFeed(stats.data_version, min_interval=POLL_SECONDS)
    return feed


@router.get(
    "/stats/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "`event: spans` with `{\"version\": N}` at once and whenever spans are stored"}},
)
async def span_events(request: Request, feed: ChangeFeed = Depends(get_feed)) -> StreamingResponse:
    """Server-sent events: the data version now and each time it changes."""

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        loop = asyncio.get_running_loop()
        started = last_sent_at = loop.time()
        last: int | None = None
        while loop.time() - started < STREAM_SECONDS:
            if await request.is_disconnected():
                return
            try:
                version = await run_in_threadpool(feed.version)
            except Exception:  # ClickHouse unreachable for a moment: say so, keep the stream
                yield "event: unavailable\ndata: {}\n\n"
                version = last
            if version != last and version is not None:
                last = version
                last_sent_at = loop.time()
                yield f"event: spans\ndata: {json.dumps({'version': version})}\n\n"
            elif loop.time() - last_sent_at >= KEEPALIVE_SECONDS:
                last_sent_at = loop.time()
                yield ": keepalive\n\n"
            await asyncio.sleep(POLL_SECONDS / 2)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
