"""A running enricher (SQLite registry, real receivers) in front of a test OTLP collector."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from agentmon.config import Settings
from enricher.service import Enricher
from registry_api.store.migrate import upgrade_registry
from tests.support.otlp_sink import OtlpTestSink


@pytest.fixture
def collector() -> Iterator[OtlpTestSink]:
    with OtlpTestSink() as sink:
        yield sink


@pytest.fixture
def start_enricher(tmp_path: Path, collector: OtlpTestSink) -> Iterator[Callable[..., Enricher]]:
    started: list[Enricher] = []

    def start(**overrides) -> Enricher:
        url = overrides.pop("registry_url", None)
        if url is None:
            url = f"sqlite:///{tmp_path / 'registry.db'}"
            upgrade_registry(url)
        settings = Settings(
            data_dir=overrides.pop("data_dir", tmp_path / "data"),
            registry_url=url,
            grpc_port=0,
            http_port=0,
            otlp_forward_endpoint=overrides.pop("otlp_forward_endpoint", collector.endpoint),
            registry_refresh_seconds=0.2,
            hold_seconds=overrides.pop("hold_seconds", 3.0),
            **overrides,
        )
        enricher = Enricher(settings)
        enricher.start()
        started.append(enricher)
        return enricher

    yield start
    for enricher in started:
        try:
            enricher.stop(timeout=5)
        except Exception:
            pass


def tracer_provider(enricher: Enricher, *, http: bool = False, **resource: str) -> TracerProvider:
    """A real SDK pipeline exporting every span as it ends (so children go first, in their own request)."""
    exporter = (
        HttpExporter(endpoint=f"http://127.0.0.1:{enricher.http_port}/v1/traces")
        if http
        else GrpcExporter(endpoint=f"127.0.0.1:{enricher.grpc_port}", insecure=True)
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "test-app", **resource}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


STAMP_KEYS = ("metadata.agent_id", "metadata.agent_name", "metadata.agent_type")


def stamped(collector: OtlpTestSink, keys: tuple[str, ...] = STAMP_KEYS) -> dict[str, dict[str, str]]:
    """Span name -> its agent stamp attributes, as the collector received them."""
    return {
        span.name: {kv.key: kv.value.string_value for kv in span.attributes if kv.key in keys}
        for _, _, span in collector.spans()
    }


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
