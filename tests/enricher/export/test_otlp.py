"""What only the OTLP/gRPC forwarder does (the shared behaviour is in test_forwarder.py)."""

from __future__ import annotations

import grpc
import pytest

from tests.support.export_acks import Acks, sample

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def protocol() -> str:
    return "grpc"


def test_resource_exhausted_without_retry_info_is_permanent(sink, forwarder, metrics):
    # e.g. a request over the collector's size limit: the same bytes would fail forever.
    fwd = forwarder(sink.endpoint)
    sink.fail_with(grpc.StatusCode.RESOURCE_EXHAUSTED, times=1)
    acks = Acks()
    assert fwd.submit(acks.batch(1), timeout=1)
    assert acks.wait([1])
    assert acks.calls[1] == [False]
    assert sample(metrics, "agentmon_export_retries_total") == 0


