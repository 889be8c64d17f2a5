"""A whole agentmon for integration tests, as a user runs it: the enricher (real OTLP receivers,
SQLite registry, spans stored in the session's chDB AND forwarded to a test OTLP collector) and
the registry API served by uvicorn on a free port, with an API key.

    def test_x(agentmon_stack):
        client = agentmon_stack.client()                     # AgentmonClient -> the real API
        tracer = agentmon_stack.tracer_provider().get_tracer("x")   # OTel SDK -> the enricher
        ...
        spans = agentmon_stack.forwarded(count=3)             # what the enricher stamped
        tree = agentmon_stack.stored_trace(trace_id, span_count=3)   # what was stored (GET /traces/{id})
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from agentmon.config import Settings
from enricher.service import Enricher
from integrations.client import AgentmonClient
from registry_api.app import create_app
from registry_api.store.migrate import upgrade_registry
from tests.support.otlp_sink import OtlpTestSink, any_value
from tests.support.servers import ServedApp

API_KEY = "integration-test-key"


@dataclass(frozen=True)
class ForwardedSpan:
    """One span as the enricher forwarded it."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    scope: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    events: tuple[str, ...]
    links: tuple[str, ...]  # linked trace ids

    @property
    def agent_id(self) -> str | None:
        return self.attributes.get("metadata.agent_id")

    @property
    def stamp(self) -> tuple[str | None, str | None, str | None]:
        a = self.attributes
        return a.get("metadata.agent_id"), a.get("metadata.agent_name"), a.get("metadata.agent_type")


@dataclass
class AgentmonStack:
    enricher: Enricher
    api: ServedApp
    collector: OtlpTestSink
    settings: Settings
    api_key: str = API_KEY
    _providers: list[TracerProvider] = field(default_factory=list)
    _clients: list[AgentmonClient] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The registry API (what AGENTMON_URL points at)."""
        return self.api.url

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.enricher.grpc_port}"

    @property
    def otlp_http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.enricher.http_port}"

    def client(self, **kwargs: Any) -> AgentmonClient:
        kwargs.setdefault("api_key", self.api_key)
        client = AgentmonClient(self.url, **kwargs)
        self._clients.append(client)
        return client

    def tracer_provider(self, **resource: str) -> TracerProvider:
        """An SDK pipeline exporting every span to the enricher over gRPC as it ends."""
        provider = TracerProvider(resource=Resource.create({"service.name": "integration-test", **resource}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=self.otlp_grpc_endpoint,
                                                                         insecure=True)))
        self._providers.append(provider)
        return provider

    # ---- reading back ------------------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.url + path, params=params, timeout=10)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
        return response.json()

    def agents(self, **filters: Any) -> list[dict[str, Any]]:
        return self.get("/agents", limit=500, **filters)["items"]

    def forwarded(self, count: int | None = None, timeout: float = 15.0) -> list[ForwardedSpan]:
        """The spans the enricher forwarded (waiting for ``count`` of them), in arrival order."""
        if count is not None:
            assert self.collector.wait_for_spans(count, timeout), (
                f"{self.collector.span_count()} spans forwarded, expected {count}")
        out = []
        for resource, scope, span in self.collector.spans():
            out.append(ForwardedSpan(
                name=span.name, trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(), scope=scope,
                attributes={kv.key: any_value(kv.value) for kv in span.attributes}, resource=resource,
                status_code=span.status.code, status_message=span.status.message,
                events=tuple(event.name for event in span.events),
                links=tuple(link.trace_id.hex() for link in span.links),
            ))
        return out

    def stored_trace(self, trace_id: str | int, span_count: int, timeout: float = 15.0) -> dict[str, Any]:
        """``GET /traces/{trace_id}`` once all ``span_count`` spans are stored; the spans flattened
        under ``"spans"``."""
        if isinstance(trace_id, int):
            trace_id = format(trace_id, "032x")
        deadline = time.monotonic() + timeout
        tree: dict[str, Any] = {}
        while time.monotonic() < deadline:
            response = httpx.get(f"{self.url}/traces/{trace_id}", timeout=10)
            if response.status_code == 200:
                tree = response.json()
                if tree["span_count"] >= span_count:
                    break
            time.sleep(0.1)
        assert tree.get("span_count", 0) == span_count, f"trace {trace_id}: {tree.get('span_count', 0)} spans stored"
        spans: list[dict[str, Any]] = []
        pending = list(tree["roots"])
        while pending:
            node = pending.pop()
            spans.append(node)
            pending.extend(node["children"])
        return {**tree, "spans": spans}

    def close(self) -> None:
        for provider in self._providers:
            provider.shutdown()
        for client in self._clients:
            client.close()


@pytest.fixture
def agentmon_stack(tmp_path, chdb_url, clickhouse_database) -> Iterator[AgentmonStack]:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade_registry(url)
    with OtlpTestSink() as collector:
        settings = Settings(data_dir=tmp_path / "data", registry_url=url, grpc_port=0, http_port=0,
                            clickhouse_url=chdb_url, clickhouse_database=clickhouse_database,
                            otlp_forward_endpoint=collector.endpoint, hold_seconds=3.0,
                            registry_refresh_seconds=0.2, api_key=API_KEY)
        enricher = Enricher(settings)
        enricher.start()
        # As `agentmon up` does: runs reported over HTTP go to the enricher's (free) gRPC port.
        settings = settings.model_copy(update={"runs_otlp_endpoint": f"127.0.0.1:{enricher.grpc_port}"})
        try:
            with ServedApp(create_app(settings)) as api:
                stack = AgentmonStack(enricher, api, collector, settings)
                yield stack
                stack.close()
        finally:
            enricher.stop(timeout=5)
