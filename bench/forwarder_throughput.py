"""An OTLP forwarder alone (gRPC or HTTP): how many 512-span requests a second it delivers to a
null sink of its protocol, and its CPU time per request (all threads of this process: grpc's
compression runs in them).

    .venv/bin/python bench/forwarder_throughput.py --compression gzip --in-flight 2
    .venv/bin/python bench/forwarder_throughput.py --compression none --in-flight 2
    .venv/bin/python bench/forwarder_throughput.py --protocol http --compression gzip

It shows what forwarding costs apart from the rest of the enricher: with gzip over gRPC, grpc's
own zlib dominates; over HTTP, ISA-L takes a tenth of that (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.compare_collectors import start_sink  # noqa: E402
from bench.enricher_throughput import free_port, wait_port  # noqa: E402
from bench.workload import make_requests  # noqa: E402
from enricher.export.base import ExportBatch  # noqa: E402
from enricher.export.otlp import OtlpGrpcForwarder  # noqa: E402
from enricher.export.otlp_http import OtlpHttpForwarder  # noqa: E402
from enricher.metrics import EnricherMetrics  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--spans", type=int, default=512)
    parser.add_argument("--compression", choices=("gzip", "none"), default="gzip")
    parser.add_argument("--in-flight", type=int, default=2)
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    args = parser.parse_args()
    payloads = make_requests(50, args.spans)
    port = free_port()
    sink = start_sink(port, args.protocol)
    try:
        wait_port(port)
        kind = OtlpHttpForwarder if args.protocol == "http" else OtlpGrpcForwarder
        forwarder = kind(f"127.0.0.1:{port}", metrics=EnricherMetrics(), compression=args.compression,
                                      max_in_flight=args.in_flight)
        delivered = threading.Semaphore(0)
        started, cpu_started = time.perf_counter(), time.process_time()
        for index in range(args.requests):
            batch = ExportBatch(payloads[index % len(payloads)], args.spans, lambda ok: delivered.release())
            forwarder.submit(batch, timeout=None)
        for _ in range(args.requests):
            delivered.acquire()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        forwarder.shutdown(5)
        print(f"protocol={args.protocol} compression={args.compression} in_flight={args.in_flight} requests_per_s={args.requests / seconds:.0f} "
              f"spans_per_s={args.requests * args.spans / seconds:.0f} cpu_ms_per_request={cpu / args.requests * 1000:.2f}")
    finally:
        sink.terminate()
        sink.wait(timeout=30)


if __name__ == "__main__":
    main()
