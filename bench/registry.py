"""The registry under load, on SQLite and on MariaDB. Run by hand:

    .venv/bin/python bench/registry.py --backend sqlite
    .venv/bin/python bench/registry.py --backend mariadb     # needs MariaDB at 127.0.0.1:3306 (root, no password)

Two measurements, each against real processes (`agentmon api`, `agentmon enricher`):

1. The API: requests/s and p50/p99 latency of `GET /agents/{id}` and `POST /agents/register`
   (an existing agent: the idempotent path every integration takes at start; and new agents),
   from `--clients` concurrent HTTP clients.
2. Registration: from a new agent's first span (the Export call's acknowledgement) to its row
   in the registry, p50 and p99, for `--agents` new agents sent one request each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import grpc
import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.enricher_throughput import EXPORT, free_port, run_null_sink, wait_port  # noqa: E402, F401
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span  # noqa: E402
from registry_api.store import AgentIdentity  # noqa: E402

MARIADB_ADMIN = os.environ.get("AGENTMON_BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def registry_url(backend: str, data: Path) -> tuple[str, callable]:
    if backend == "sqlite":
        return f"sqlite:///{data / 'registry.db'}", lambda: None
    admin = sa.create_engine(MARIADB_ADMIN)
    name = f"agentmon_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}`"))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()

    return admin.url.set(database=name).render_as_string(hide_password=False), drop


def timed_calls(call, count: int, clients: int) -> dict:
    latencies: list[float] = []
    lock = threading.Lock()
    next_index = iter(range(count))

    def worker() -> None:
        with httpx.Client(timeout=30) as http:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                started = time.perf_counter()
                response = call(http, index)
                elapsed = time.perf_counter() - started
                if response.status_code >= 400:
                    raise RuntimeError(f"{response.status_code}: {response.text}")
                with lock:
                    latencies.append(elapsed)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    latencies.sort()
    return {"requests_per_s": count / seconds, "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000}


def bench_api(env: dict, requests: int, clients: int) -> None:
    port = free_port()
    api = subprocess.Popen([sys.executable, "-m", "agentmon.cli", "api", "--port", str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_port(port)
        known = httpx.post(f"{base}/agents/register", json={"name": "bench-known", "type": "custom"}).json()["id"]
        run = uuid.uuid4().hex[:6]
        cases = {
            "GET /agents/{id}": lambda http, i: http.get(f"{base}/agents/{known}"),
            "POST /agents/register (existing)": lambda http, i: http.post(
                f"{base}/agents/register", json={"name": "bench-known", "type": "custom"}),
            "POST /agents/register (new)": lambda http, i: http.post(
                f"{base}/agents/register", json={"name": f"bench-{run}-{i}", "type": "custom"}),
        }
        for label, call in cases.items():
            timed_calls(call, min(100, requests), clients)  # warm-up
            result = timed_calls(call, requests, clients)
            print(f"api {label}: " + " ".join(f"{k}={v:.1f}" for k, v in result.items()), flush=True)
    finally:
        api.terminate()
        api.wait(timeout=30)


def agent_request(name: str) -> bytes:
    span = Span(trace_id=uuid.uuid4().bytes, span_id=os.urandom(8), name=f"invoke_agent {name}",
                start_time_unix_nano=time.time_ns(), end_time_unix_nano=time.time_ns() + 1000,
                attributes=[KeyValue(key="gen_ai.operation.name", value=AnyValue(string_value="invoke_agent")),
                            KeyValue(key="gen_ai.agent.name", value=AnyValue(string_value=name))])
    resource_spans = ResourceSpans()
    resource_spans.scope_spans.add().spans.append(span)
    return ExportTraceServiceRequest(resource_spans=[resource_spans]).SerializeToString()


def bench_registration(env: dict, url: str, agents: int, interval: float) -> None:
    sink_port, grpc_port = free_port(), free_port()
    sink = subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent.parent)!r}); "
                             f"from bench.enricher_throughput import run_null_sink; run_null_sink({sink_port})"])
    enricher = subprocess.Popen(
        [sys.executable, "-m", "agentmon.cli", "enricher", "--grpc-port", str(grpc_port), "--http-port", str(free_port()),
         "--forward-otlp", f"127.0.0.1:{sink_port}"], env=env)
    engine = sa.create_engine(url)
    agents_table = sa.table("agents", sa.column("id"))
    try:
        wait_port(sink_port)
        wait_port(grpc_port)
        export = grpc.insecure_channel(f"127.0.0.1:{grpc_port}").unary_unary(EXPORT)
        run = uuid.uuid4().hex[:6]
        acked: dict[str, float] = {}
        seen: dict[str, float] = {}
        sending = threading.Event()
        sending.set()

        def poll() -> None:  # watches the registry while agents arrive
            deadline = time.monotonic() + 120
            while (sending.is_set() or len(seen) < len(acked)) and time.monotonic() < deadline:
                with engine.connect() as conn:
                    rows = conn.execute(sa.select(agents_table.c.id)).scalars().all()
                now = time.perf_counter()
                for agent_id in rows:
                    if agent_id in acked:
                        seen.setdefault(agent_id, now)
                time.sleep(0.005)

        poller = threading.Thread(target=poll)
        poller.start()
        for index in range(agents):
            name = f"reg-{run}-{index}"
            agent_id = AgentIdentity(name=name).agent_id
            export(agent_request(name), timeout=10)
            acked[agent_id] = time.perf_counter()
            time.sleep(interval)
        sending.clear()
        poller.join()
        latencies = sorted((seen[a] - acked[a]) * 1000 for a in seen)
        print(f"registration first span -> row: agents={agents} every {interval * 1000:.0f} ms found={len(seen)} "
              f"p50_ms={statistics.median(latencies):.1f} p99_ms={latencies[int(len(latencies) * 0.99) - 1]:.1f} "
              f"max_ms={latencies[-1]:.1f}", flush=True)
    finally:
        engine.dispose()
        for process in (enricher, sink):
            process.terminate()
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "mariadb"], default="sqlite")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between two new agents")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="agentmon-bench-registry-"))
    url, drop = registry_url(args.backend, data)
    env = {**os.environ, "AGENTMON_DATA_DIR": str(data), "AGENTMON_REGISTRY_URL": url, "AGENTMON_LOG_LEVEL": "warning"}
    try:
        subprocess.run([sys.executable, "-m", "agentmon.cli", "migrate"], env=env, check=True, capture_output=True)
        print(f"backend={args.backend}", flush=True)
        bench_api(env, args.requests, args.clients)
        bench_registration(env, url, args.agents, args.interval)
    finally:
        drop()


if __name__ == "__main__":
    main()
