"""The enricher next to two references under the same load and the same sink:

- ``enricher``: `agentmon enricher` forwarding over OTLP (gzip) to the sink;
- ``rotel``: the rotel collector (Rust, PyPI package `rotel`) forwarding over OTLP (gzip) to the sink;
- ``null``: a Python grpcio receiver that acknowledges and drops (the ceiling of the load generator).

``--protocol`` is what the targets forward over: ``grpc`` (to a null grpcio sink) or ``http``
(OTLP/HTTP protobuf, to a null http.server sink that un-gzips). Both targets use the same one.

Every target runs in its own process and gets the same requests of 512 realistic spans
(bench/workload.py) from the same load generator, 8 in flight. Run by hand:

    .venv/bin/pip install 'rotel==0.0.1a15'      # or: pip install -e '.[bench]'
    .venv/bin/python bench/compare_collectors.py --requests 400 --rounds 2

Prints one line per target and round: spans/s, p50/p99 Export latency, the target's RSS, and
the target's CPU time per request (user + system, all its threads), the sink's and the load generator's
CPU per request (they share the cores), the push-backs and their reasons (``retried_for``), and for
the enricher the held spans it carried forward in its journal. ``--compression none`` makes both
forwarders send uncompressed, to separate the cost of gzip (grpc's, in the enricher) from the
rest. Beware: rotel 0.0.1a15 ignores it and gzips anyway (about 27 KB on the wire per 220 KB
request, measured with a byte-counting proxy), so ``none`` compares an uncompressing enricher
with a compressing rotel.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.enricher_throughput import free_port, load, rss_mb, wait_port  # noqa: E402
from bench.workload import make_requests  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


COMPRESSION = "gzip"  # of what the targets forward; set from --compression
PROTOCOL = "grpc"  # what the targets forward over, and what the sink serves; set from --protocol


def start_sink(port: int, protocol: str = "grpc") -> subprocess.Popen:
    sink = "run_null_http_sink" if protocol == "http" else "run_null_sink"
    return subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                             f"from bench.enricher_throughput import {sink}; {sink}({port})"])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_enricher(grpc_port: int, sink_port: int) -> subprocess.Popen:
    data = Path(tempfile.mkdtemp(prefix="agentmon-bench-"))
    env = {**os.environ, "AGENTMON_DATA_DIR": str(data), "AGENTMON_LOG_LEVEL": "warning",
           "AGENTMON_OTLP_FORWARD_COMPRESSION": COMPRESSION,
           "AGENTMON_OTLP_FORWARD_PROTOCOL": "http/protobuf" if PROTOCOL == "http" else "grpc"}
    subprocess.run([sys.executable, "-m", "agentmon.cli", "migrate"], env=env, check=True, capture_output=True)
    http_port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "agentmon.cli", "enricher", "--grpc-port", str(grpc_port),
         "--http-port", str(http_port), "--forward-otlp", f"127.0.0.1:{sink_port}"], env=env)
    process.metrics_url = f"http://127.0.0.1:{http_port}/metrics"
    return process


def enricher_counters(url: str) -> dict:
    """What the enricher did besides forwarding: held spans carried forward in the journal."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {"carried_forward": int(float(values.get("agentmon_spans_carried_forward_total", 0)))}


def rotel_binary() -> Path:
    try:
        import rotel
    except ImportError:
        sys.exit("rotel is not installed: .venv/bin/pip install 'rotel==0.0.1a15'")
    return Path(rotel.__file__).parent / "rotel-agent"


def start_rotel(grpc_port: int, sink_port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [str(rotel_binary()), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
         "--otlp-http-endpoint", f"127.0.0.1:{free_port()}", "--exporter", "otlp",
         "--otlp-exporter-endpoint", f"http://127.0.0.1:{sink_port}", "--otlp-exporter-compression", COMPRESSION,
         "--otlp-exporter-protocol", PROTOCOL],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_null(grpc_port: int, _sink_port: int) -> subprocess.Popen:
    return start_sink(grpc_port, "grpc")  # it stands in for a target: it receives gRPC


TARGETS = {"enricher": start_enricher, "rotel": start_rotel, "null": start_null}


def run(target: str, payloads: list[bytes], inflight: int, spans: int) -> dict:
    sink_port, grpc_port = free_port(), free_port()
    sink = start_sink(sink_port, PROTOCOL)
    process = TARGETS[target](grpc_port, sink_port)
    try:
        wait_port(sink_port)
        wait_port(grpc_port)
        time.sleep(0.5)
        load(grpc_port, payloads[:20], inflight, spans)  # warm-up: connections, caches, agents
        cpu_before, sink_cpu_before = cpu_seconds(process.pid), cpu_seconds(sink.pid)
        load_cpu_before = time.process_time()
        result = load(grpc_port, payloads, inflight, spans)
        result["load_cpu_ms_per_request"] = (time.process_time() - load_cpu_before) / len(payloads) * 1000
        result["cpu_ms_per_request"] = (cpu_seconds(process.pid) - cpu_before) / len(payloads) * 1000
        # The sink shares the 2 cores: what a target's way of forwarding costs it counts too.
        result["sink_cpu_ms_per_request"] = (cpu_seconds(sink.pid) - sink_cpu_before) / len(payloads) * 1000
        result["rss_mb"] = rss_mb(process.pid)
        if hasattr(process, "metrics_url"):
            result.update(enricher_counters(process.metrics_url))
        return result
    finally:
        for child in (process, sink):
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--spans", type=int, default=512)
    parser.add_argument("--inflight", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--targets", default="enricher,rotel,null")
    parser.add_argument("--compression", choices=("gzip", "none"), default="gzip")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    args = parser.parse_args()
    global COMPRESSION, PROTOCOL
    COMPRESSION, PROTOCOL = args.compression, args.protocol
    payloads = make_requests(args.requests, args.spans)
    for round_number in range(1, args.rounds + 1):
        for target in args.targets.split(","):
            result = run(target, payloads, args.inflight, args.spans)
            print(f"round={round_number} target={target} protocol={PROTOCOL} " + " ".join(
                f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
