"""Export-to-queryable latency: how long after the enricher acknowledges an OTLP Export are
its spans visible to a SELECT in ClickHouse, with default settings. Run by hand:

    .venv/bin/python bench/export_to_queryable.py --seconds 30 --rate 10

It runs what `agentmon up` runs (receivers, enricher, ClickHouse writer into embedded chDB,
SQLite registry) in this process, sends `--rate` requests a second of 512 realistic spans
(bench/workload.py: whole traces, agent runs with LLM calls and plain service spans) over
OTLP/gRPC, and polls ClickHouse every 20 ms for the last whole trace of each request. Latency is
from the Export call's return (the acknowledgement) to the first poll that sees the trace.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import clickhouse  # noqa: E402
from agentmon.config import Settings  # noqa: E402
from enricher.service import Enricher  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from registry_api.store.migrate import upgrade_registry  # noqa: E402
from workload import make_requests  # noqa: E402

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def last_complete_trace_id(payload: bytes) -> str:
    """The last trace whose root is in the request (workload.py cuts the request's last
    trace short: its spans wait, as they should, up to AGENTMON_HOLD_SECONDS for a root)."""
    request = ExportTraceServiceRequest.FromString(payload)
    spans = request.resource_spans[-1].scope_spans[-1].spans
    return next(span.trace_id.hex() for span in reversed(spans) if not span.parent_span_id)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rate", type=float, default=10, help="requests a second (512 spans each)")
    parser.add_argument("--poll-ms", type=float, default=20)
    args = parser.parse_args()

    count = int(args.seconds * args.rate)
    payloads = make_requests(count, seed=7, start_ns=time.time_ns() - 3_600_000_000_000)
    markers = [last_complete_trace_id(payload) for payload in payloads]

    data_dir = Path(tempfile.mkdtemp(prefix="agentmon-e2q-"))
    settings = Settings(data_dir=data_dir, grpc_port=0, http_port=0, clickhouse_url=f"chdb://{data_dir / 'chdb'}")
    upgrade_registry(settings.registry_database_url)
    enricher = Enricher(settings)
    enricher.start()
    client = clickhouse.connect(settings.clickhouse_url)
    table = f"{settings.clickhouse_database}.{settings.clickhouse_table}"

    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    sending_done = threading.Event()
    lock = threading.Lock()

    def poll() -> None:
        while True:
            with lock:
                pending = [marker for marker in acked if marker not in seen]
            if pending:
                rows = client.query(
                    f"SELECT DISTINCT TraceId FROM {table} WHERE TraceId IN {{ids:Array(String)}}",
                    parameters={"ids": pending},
                ).result_rows
                now = time.perf_counter()
                for (trace_id,) in rows:
                    seen.setdefault(trace_id, now)
            elif sending_done.is_set():
                return
            time.sleep(args.poll_ms / 1000)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{enricher.grpc_port}")
    export = channel.unary_unary(EXPORT)
    started = time.perf_counter()
    for index, (payload, marker) in enumerate(zip(payloads, markers, strict=True)):
        due = started + index / args.rate
        time.sleep(max(0.0, due - time.perf_counter()))
        export(payload, timeout=30)
        with lock:
            acked[marker] = time.perf_counter()
    sending_done.set()
    poller.join(timeout=60)
    enricher.stop()

    latencies = [(seen[m] - acked[m]) * 1000 for m in markers if m in seen]
    missing = len(markers) - len(latencies)
    print(
        f"requests={count} spans~={count * 512} rate={args.rate}/s "
        f"p50_ms={statistics.median(latencies):.0f} p95_ms={percentile(latencies, 0.95):.0f} "
        f"p99_ms={percentile(latencies, 0.99):.0f} max_ms={max(latencies):.0f} not_seen={missing}"
    )


if __name__ == "__main__":
    main()
