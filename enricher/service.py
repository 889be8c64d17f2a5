"""Build the enricher's stages from Settings and run them in order.

Start: registry view -> pipeline (replays the journal) -> receivers.
Stop:  receivers (no new requests) -> pipeline (process, deliver, commit) -> registry view.
"""

from __future__ import annotations

import logging
import threading

import uvicorn

from agentmon.config import Settings
from enricher.agents import AgentDirectory
from enricher.attribute import TraceAttributor
from enricher.enrichment import Enrichment
from enricher.export.base import SpanSink
from enricher.export.otlp import OtlpGrpcForwarder
from enricher.export.otlp_http import OtlpHttpForwarder
from enricher.identify.rules import load_rules
from enricher.journal import Journal
from enricher.metrics import EnricherMetrics
from enricher.pipeline import Pipeline
from enricher.receive.grpc_server import OtlpGrpcReceiver
from enricher.receive.http_server import create_otlp_http_app
from registry_api.store import AgentStore, LastUsedRecorder, create_registry_engine

log = logging.getLogger(__name__)


class NoSinkConfigured(ValueError):
    pass


def sinks_from(settings: Settings, metrics: EnricherMetrics) -> list[SpanSink]:
    sinks: list[SpanSink] = []
    if settings.clickhouse_url:
        import clickhouse
        from enricher.export.clickhouse import ClickHouseWriter

        client = clickhouse.connect(settings.clickhouse_url)
        clickhouse.ensure_schema(client, settings.clickhouse_database, settings.clickhouse_table)
        sinks.append(
            ClickHouseWriter(
                client,
                database=settings.clickhouse_database,
                table=settings.clickhouse_table,
                metrics=metrics,
                batch_spans=settings.clickhouse_batch_spans,
                flush_seconds=settings.clickhouse_flush_seconds,
            )
        )
    if settings.otlp_forward_endpoint:
        forwarder = OtlpHttpForwarder if settings.otlp_forward_protocol == "http/protobuf" else OtlpGrpcForwarder
        sinks.append(
            forwarder(
                settings.otlp_forward_endpoint,
                metrics=metrics,
                insecure=settings.otlp_forward_insecure,
                compression=settings.otlp_forward_compression,
                timeout=settings.otlp_forward_timeout_seconds,
            )
        )
    return sinks


class Enricher:
    def __init__(
        self,
        settings: Settings,
        *,
        store: AgentStore | None = None,
        sinks: list[SpanSink] | None = None,
        metrics: EnricherMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or EnricherMetrics()
        self._owns_store = store is None
        self.store = store or AgentStore(create_registry_engine(settings.registry_database_url))
        self.sinks = sinks if sinks is not None else sinks_from(settings, self.metrics)
        if not self.sinks:
            raise NoSinkConfigured(
                "the enricher has nowhere to send spans: set --forward-otlp HOST:PORT (AGENTMON_OTLP_FORWARD_ENDPOINT) "
                "and/or --clickhouse-url (AGENTMON_CLICKHOUSE_URL)"
            )
        self.directory = AgentDirectory(
            self.store,
            self.metrics,
            recorder=LastUsedRecorder(self.store, settings.last_used_flush_seconds),
            refresh_seconds=settings.registry_refresh_seconds,
        )
        self.attributor = TraceAttributor(
            self.metrics, hold_seconds=settings.hold_seconds, hold_max_spans=settings.hold_max_spans
        )
        self.journal = Journal(settings.data_dir / "journal", max_bytes=settings.journal_max_bytes)
        rules = load_rules(settings.rules_file)
        self.enrichment = Enrichment(
            rules=rules,
            directory=self.directory,
            attributor=self.attributor,
            metrics=self.metrics,
            drop_unmonitored=settings.drop_unmonitored,
        )
        self.pipeline = Pipeline(
            self.enrichment,
            scanner=self.enrichment.scanner,
            sinks=self.sinks,
            journal=self.journal,
            metrics=self.metrics,
        )
        self.grpc = OtlpGrpcReceiver(
            self.pipeline,
            self.metrics,
            host=settings.host,
            port=settings.grpc_port,
            max_request_bytes=settings.max_request_bytes,
        )
        self._http = uvicorn.Server(
            uvicorn.Config(
                create_otlp_http_app(self.pipeline, self.metrics, max_request_bytes=settings.max_request_bytes),
                host=settings.host,
                port=settings.http_port,
                log_level="warning",
                lifespan="off",
                access_log=False,
            )
        )
        self._http_thread: threading.Thread | None = None

    @property
    def grpc_port(self) -> int:
        return self.grpc.port

    @property
    def http_port(self) -> int:
        if self._http.servers and self._http.servers[0].sockets:
            return self._http.servers[0].sockets[0].getsockname()[1]
        return self.settings.http_port

    def start(self) -> None:
        try:
            self.directory.refresh()  # warm the cache; if the registry is down, start anyway
        except Exception as error:
            log.warning("registry not reachable at start (%s); agents will be created when it is", error)
        self.directory.start()
        self.pipeline.start()
        self.grpc.start()
        self._http_thread = threading.Thread(target=self._http.run, name="otlp-http", daemon=True)
        self._http_thread.start()
        while not self._http.started:
            if not self._http_thread.is_alive():
                raise OSError(f"cannot start the OTLP/HTTP receiver on {self.settings.host}:{self.settings.http_port}")
            threading.Event().wait(0.02)
        log.info(
            "enricher receiving OTLP on %s: gRPC %d, HTTP %d (/v1/traces, /metrics)",
            self.settings.host, self.grpc_port, self.http_port,
        )

    def stop(self, timeout: float = 10.0) -> None:
        self.grpc.stop(grace=min(5.0, timeout))
        self._http.should_exit = True
        if self._http_thread is not None:
            self._http_thread.join(timeout=timeout)
        self.pipeline.shutdown(timeout=timeout)
        self.directory.shutdown()
        if self._owns_store:
            self.store.engine.dispose()
