"""The registry API application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

import agentmon
from agentmon.config import Settings
from registry_api import ui
from registry_api.routes import agents, health, live, runs
from registry_api.routes import stats as stats_routes
from registry_api.runs import OtlpRunExporter, RunService
from registry_api.stats import StatsStore, load_prices
from registry_api.store import AgentStore, RegistryUnavailable, create_registry_engine

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, *, store: AgentStore | None = None, stats: StatsStore | None = None
) -> FastAPI:
    """Build the API. Pass ``store`` to share one data layer with other components
    (``agentmon up``); otherwise the app opens and closes its own engine. Stats come from
    ClickHouse when AGENTMON_CLICKHOUSE_URL is set (or ``stats`` is given)."""
    owns_store = store is None
    if store is None:
        store = AgentStore(create_registry_engine(settings.registry_database_url))
    if stats is None and settings.clickhouse_url:
        stats = stats_store_from(settings)

    # Runs started through the API: their spans go to the enricher over OTLP/gRPC.
    runs_service = RunService(
        OtlpRunExporter(settings.runs_otlp_target),
        max_open=settings.runs_max_open,
        max_seconds=settings.run_max_seconds,
    )

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        service: RunService = application.state.runs  # tests may swap it before startup
        service.start_reaper()
        try:
            yield
        finally:
            # Off the event loop: closing sends the spans of runs still open (bounded wait).
            await run_in_threadpool(service.close)
            if owns_store:
                store.engine.dispose()

    app = FastAPI(
        title="agentmon registry API",
        version=agentmon.__version__,
        description="The agent registry: register, list and manage monitored agents.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.stats = stats
    app.state.runs = runs_service
    app.include_router(health.router)
    app.include_router(agents.router)
    app.include_router(runs.router)
    app.include_router(stats_routes.router)
    app.include_router(live.router)
    ui.install(app)
    _install_error_handlers(app)
    return app


def stats_store_from(settings: Settings) -> StatsStore:
    import clickhouse

    client = clickhouse.connect(settings.clickhouse_url)
    clickhouse.ensure_schema(client, settings.clickhouse_database, settings.clickhouse_table)
    return StatsStore(
        client,
        database=settings.clickhouse_database,
        table=settings.clickhouse_table,
        prices=load_prices(settings.prices_file),
    )


def _install_error_handlers(app: FastAPI) -> None:
    """Errors become JSON bodies; stack traces stay in the server log."""

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer, unless the offending input cannot be written back as JSON
        # (NaN, Infinity, a lone UTF-16 surrogate): then the field errors without the input.
        errors = jsonable_encoder(error.errors())
        try:
            return JSONResponse(status_code=422, content={"detail": errors})
        except (ValueError, UnicodeError, RecursionError):
            slim = [
                {"type": e.get("type"), "loc": [_printable(part) for part in e.get("loc", ())],
                 "msg": _printable(e.get("msg", ""))}
                for e in errors
            ]
            return JSONResponse(status_code=422, content={"detail": slim})

    @app.exception_handler(RegistryUnavailable)
    @app.exception_handler(DBAPIError)
    async def _database_unavailable(request: Request, error: Exception) -> JSONResponse:
        log.error("registry database error on %s %s: %s", request.method, request.url.path, error)
        return JSONResponse(
            status_code=503,
            content={"detail": "the registry database is unavailable; try again shortly"},
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal server error"})


def _printable(value: object) -> object:
    """Text that UTF-8 can encode (lone surrogates become '?'); other values unchanged."""
    return value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else value
