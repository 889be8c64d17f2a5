"""Enricher throughput: OTLP/gRPC load -> `agentmon enricher` -> a sink that drops everything.

Each part runs in its own process. Prints spans/s, p50/p99 Export latency and the
enricher's RSS. Run by hand (not in CI):

    .venv/bin/python bench/enricher_throughput.py --requests 400 --inflight 8
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent import futures
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.workload import make_requests  # noqa: E402

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_null_sink(port: int) -> None:
    """A gRPC TraceService that acknowledges and drops (the downstream stand-in)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.max_receive_message_length", 64 << 20)])
    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(lambda request, context: b"")},
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def run_null_http_sink(port: int) -> None:
    """An OTLP/HTTP receiver (POST /v1/traces) that un-gzips and drops, like run_null_sink's grpc
    core does; any other path gets 404 so that a misdirected target shows up as failures."""
    import zlib
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                zlib.decompress(body, 47)
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load(port: int, payloads: list[bytes], inflight: int, spans_per_request: int) -> dict:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
    export = channel.unary_unary(EXPORT)
    latencies: list[float] = []
    retries = 0
    reasons: Counter[str] = Counter()  # the first words of each push-back's message
    lock = threading.Lock()
    queue = list(payloads)

    def worker() -> None:
        nonlocal retries
        while True:
            with lock:
                if not queue:
                    return
                payload = queue.pop()
            while True:
                started = time.perf_counter()
                try:
                    export(payload, timeout=30)
                    break
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    with lock:
                        retries += 1
                        reasons["-".join((error.details() or "none").split()[:4])] += 1
                    time.sleep(0.05)
            with lock:
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(inflight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    channel.close()
    latencies.sort()
    return {
        "spans_per_s": len(payloads) * spans_per_request / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "retries": retries,
        "retried_for": ",".join(f"{reason}:{count}" for reason, count in reasons.items()) or "-",
        "seconds": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--spans", type=int, default=512)
    parser.add_argument("--inflight", type=int, default=8)
    args = parser.parse_args()

    payloads = make_requests(args.requests, args.spans)
    sink_port, grpc_port, http_port = free_port(), free_port(), free_port()
    sink = subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent.parent)!r}); "
                             f"from bench.enricher_throughput import run_null_sink; run_null_sink({sink_port})"])
    data = Path(tempfile.mkdtemp(prefix="agentmon-bench-"))
    env = {**os.environ, "AGENTMON_DATA_DIR": str(data), "AGENTMON_LOG_LEVEL": "warning"}
    subprocess.run([sys.executable, "-m", "agentmon.cli", "migrate"], env=env, check=True)
    enricher = subprocess.Popen(
        [sys.executable, "-m", "agentmon.cli", "enricher", "--grpc-port", str(grpc_port), "--http-port", str(http_port),
         "--forward-otlp", f"127.0.0.1:{sink_port}"], env=env)
    try:
        wait_port(sink_port)
        wait_port(grpc_port)
        load(grpc_port, payloads[:20], args.inflight, args.spans)  # warm up: agents registered, caches filled
        result = load(grpc_port, payloads, args.inflight, args.spans)
        result["enricher_rss_mb"] = rss_mb(enricher.pid)
        print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    finally:
        enricher.terminate()
        enricher.wait(timeout=30)
        sink.terminate()


if __name__ == "__main__":
    main()
