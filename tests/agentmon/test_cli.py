from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

AGENTMON = [sys.executable, "-m", "agentmon.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMON_")}
    env.update(extra)
    return env


@pytest.mark.parametrize("command", [[], ["up"], ["api"], ["migrate"]])
def test_help_explains_every_flag(command: list[str]) -> None:
    result = subprocess.run([*AGENTMON, *command, "--help"], capture_output=True, text=True, check=True)
    assert "usage: agentmon" in result.stdout
    if command:
        assert "--data-dir" in result.stdout and "AGENTMON_DATA_DIR" in result.stdout
        assert "--registry-url" in result.stdout
    else:
        for sub in ("up", "api", "migrate"):
            assert sub in result.stdout


def test_invalid_configuration_is_a_clear_error() -> None:
    result = subprocess.run([*AGENTMON, "migrate"], capture_output=True, text=True, env=_clean_env(AGENTMON_API_PORT="x"))
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr and "api_port" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_builds_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    subprocess.run([*AGENTMON, "migrate", "--registry-url", url], check=True, capture_output=True, env=_clean_env())
    engine = sa.create_engine(url)
    assert "agents" in sa.inspect(engine).get_table_names()
    engine.dispose()


def test_up_runs_everything_on_embedded_defaults(tmp_path: Path) -> None:
    port, grpc_port, http_port = _free_port(), _free_port(), _free_port()
    process = subprocess.Popen(
        [*AGENTMON, "up", "--port", str(port), "--grpc-port", str(grpc_port), "--http-port", str(http_port)],
        cwd=tmp_path,
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "agentmon up did not become healthy"
            time.sleep(0.1)
        created = httpx.post(f"{base}/agents/register", json={"name": "first", "type": "custom"})
        assert created.status_code == 201
        assert (tmp_path / "data" / "registry.db").exists()  # the default data dir, relative to cwd

        # OTLP in, stored in the embedded chDB, counted by the stats API: all in this one process.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True)))
        with provider.get_tracer("t").start_as_current_span(
            "invoke_agent first", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "first"}
        ):
            pass
        deadline = time.monotonic() + 30
        while True:
            rows = httpx.get(f"{base}/stats/agents").json()["items"]
            if rows and rows[0]["runs"] == 1:
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.2)
        assert rows[0]["name"] == "first"
        assert (tmp_path / "data" / "chdb").is_dir()
    finally:
        process.terminate()
        process.wait(timeout=15)
