"""Fixtures for the forwarder tests: a real receiver and forwarder per protocol.

``protocol`` runs a test over both wires; a module about one protocol overrides it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from enricher.export.forwarder import QueuedForwarder
from enricher.export.otlp import OtlpGrpcForwarder
from enricher.export.otlp_http import OtlpHttpForwarder
from enricher.metrics import EnricherMetrics
from tests.support.otlp_http_sink import OtlpHttpTestSink
from tests.support.otlp_sink import OtlpTestSink

PROTOCOLS: dict[str, tuple[type[OtlpTestSink], type[QueuedForwarder]]] = {
    "grpc": (OtlpTestSink, OtlpGrpcForwarder),
    "http": (OtlpHttpTestSink, OtlpHttpForwarder),
}


@pytest.fixture(params=sorted(PROTOCOLS))
def protocol(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def sink_class(protocol: str) -> type[OtlpTestSink]:
    return PROTOCOLS[protocol][0]


@pytest.fixture
def sink(sink_class: type[OtlpTestSink]) -> Iterator[OtlpTestSink]:
    with sink_class() as s:
        yield s


@pytest.fixture
def down_sink(sink_class: type[OtlpTestSink]) -> Iterator[OtlpTestSink]:
    """A sink that owns a port but is not serving yet (collector down)."""
    s = sink_class()
    s.stop()
    yield s
    s.stop()


@pytest.fixture
def metrics() -> EnricherMetrics:
    return EnricherMetrics()


@pytest.fixture
def forwarder(protocol: str, metrics: EnricherMetrics) -> Iterator[Callable[..., QueuedForwarder]]:
    made: list[QueuedForwarder] = []

    def make(endpoint: str, **kw: object) -> QueuedForwarder:
        kw = {"initial_backoff": 0.05, "max_backoff": 0.2, "timeout": 5.0, **kw}
        f = PROTOCOLS[protocol][1](endpoint, metrics=metrics, **kw)  # type: ignore[arg-type]
        made.append(f)
        return f

    yield make
    for f in made:
        f.shutdown(1.0)
