"""The examples of docs/AGENT_INTEGRATION_GUIDE.md, run as its readers run them.

Each file in docs/examples runs in a subprocess of its own, pointed only by environment variables at a real
agentmon (the enricher, chDB and the registry API with an API key, from tests/integrations/conftest.py), at
the fake flow servers of tests/support, and at a real LiteLLM proxy. Each test then checks what the guide's
"Verify" step shows: the registry row and the agent's stats. The guide must show the files unchanged.

docs/examples/autogen_team.py needs an AutoGen environment of its own (autogen-core pins protobuf 5), so it is
only compiled here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.enricher.conftest import wait_until
from tests.integrations.conftest import AgentmonStack, agentmon_stack  # noqa: F401 (agentmon_stack: a fixture)
from tests.support.litellm_proxy import running_litellm_proxy
from tests.support.fake_flow_servers import (
    FakeAutoGenStudio,
    FakeFlowise,
    FakeLangflow,
    studio_agent,
    studio_team,
    studio_team_row,
)
from tests.support.servers import ServedApp, closed_port

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "docs" / "examples"
GUIDE = REPO / "docs" / "AGENT_INTEGRATION_GUIDE.md"
FLOW_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
CHATFLOW_ID = "8a1e0f3c-2b7d-4c52-9d0e-6f1a2b3c4d5e"
# The LiteLLM proxy's environment, as the guide gives it (its OTLP endpoint aside).
PROXY_ENV = {
    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    "OTEL_SERVICE_NAME": "litellm-proxy",
    "USE_OTEL_LITELLM_REQUEST_SPAN": "true",
    "LITELLM_OTEL_BAGGAGE_METADATA_KEYS": "requester_metadata.agent_id,requester_metadata.agent_name,"
                                          "requester_metadata.agent_type,requester_metadata.parent_trace_id",
    "LITELLM_MASTER_KEY": "sk-change-me",
    "OPENAI_API_KEY": "sk-your-openai-key",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
}
MOCK_TOKENS = {"input_tokens": 10, "output_tokens": 20}  # what LiteLLM's mock_response reports


@pytest.fixture
def env(agentmon_stack: AgentmonStack) -> dict[str, str]:
    """The example's environment: this machine's, with agentmon's and the exporter's settings only."""
    inherited = ("OTEL_", "LITELLM_", "USE_OTEL_", "AGENTMON_", "LANGFLOW_", "FLOWISE_", "AUTOGEN_STUDIO_", "OPENAI_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(inherited)}
    env.update(AGENTMON_URL=agentmon_stack.url, AGENTMON_API_KEY=agentmon_stack.api_key,
               OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
               OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{agentmon_stack.otlp_grpc_endpoint}",
               OTEL_BSP_SCHEDULE_DELAY="100", LITELLM_LOCAL_MODEL_COST_MAP="True")
    return env


def run(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    command = [sys.executable if arg == "python" else arg for arg in args]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} exited {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def settled(stack: AgentmonStack, name: str, **expected: Any) -> tuple[dict, dict]:
    """The agent's registry row and stats, once the stats show ``expected``."""
    rows: list[dict] = []

    def registered() -> bool:
        rows[:] = [r for r in stack.agents(search=name) if r["name"] == name]
        return bool(rows)

    assert wait_until(registered, 15), f"no agent {name!r}: {[r['name'] for r in stack.agents()]}"
    [row] = rows
    stats: dict[str, Any] = {}

    def arrived() -> bool:
        stats.update(stack.get(f"/agents/{row['id']}/stats"))
        return all(stats[key] == value for key, value in expected.items())

    assert wait_until(arrived, 15), (name, stats)
    return row, stats


def identity(row: dict) -> tuple:
    return row["name"], row["type"], row["external_id"], row["project_id"]


# ---- the guide shows the files ----------------------------------------------------------------------


def test_the_guide_shows_every_example_file_unchanged() -> None:
    guide = GUIDE.read_text()
    shown = dict(re.findall(r"<!-- file: (\S+) -->\n```\w+\n(.*?)```", guide, flags=re.S))
    files = {str(path.relative_to(REPO)) for path in EXAMPLES.iterdir() if path.is_file()}
    assert set(shown) == files
    for path, text in shown.items():
        assert (REPO / path).read_text() == text, f"the guide's copy of {path} differs from the file"
    for key, value in PROXY_ENV.items():
        assert f"export {key}={value}\n" in guide, key


def test_the_autogen_example_compiles() -> None:
    path = EXAMPLES / "autogen_team.py"
    compile(path.read_text(), str(path), "exec")


# ---- the examples, run --------------------------------------------------------------------------


def test_trace_api_and_check_agent(agentmon_stack: AgentmonStack, env: dict[str, str]) -> None:
    out = run(env, "bash", "docs/examples/trace_api.sh")
    assert '"status":"ok"' in out
    row, _ = settled(agentmon_stack, "report-bot", runs=1, llm_calls=0, errors=0)
    assert identity(row) == ("report-bot", "custom", None, "default-project")
    check = run(env, "bash", "docs/examples/check_agent.sh", "report-bot").splitlines()
    assert check[0].startswith(f'{{"id":"{row["id"]}","name":"report-bot","type":"custom"')
    assert '"runs":1,"llm_calls":0' in check[1]
    assert check[2] == f"dashboard: {agentmon_stack.url}/ui/agents/{row['id']}"
    assert httpx.get(f"{agentmon_stack.url}/ui/agents/{row['id']}").status_code == 200


def test_litellm_sdk(agentmon_stack: AgentmonStack, env: dict[str, str]) -> None:
    out = run(env, "python", "docs/examples/litellm_sdk.py")
    row, stats = settled(agentmon_stack, "invoice-bot", runs=1, llm_calls=1, **MOCK_TOKENS)
    assert f"agent {row['id']}: Invoices 17 and 23." in out
    assert identity(row) == ("invoice-bot", "custom", None, "default-project") and stats["cost_usd"] > 0


@pytest.fixture
def litellm_proxy(agentmon_stack: AgentmonStack, env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """``litellm --config docs/examples/litellm_proxy.yaml`` with the guide's environment; its URL."""
    port = closed_port()
    proxy_env = {**env, **PROXY_ENV}
    with running_litellm_proxy("docs/examples/litellm_proxy.yaml", port, env=proxy_env, cwd=REPO,
                               log_path=tmp_path / "proxy.log", ready_timeout=90) as url:
        yield url


def test_litellm_proxy_clients(agentmon_stack: AgentmonStack, env: dict[str, str], litellm_proxy: str) -> None:
    client_env = {**env, "LITELLM_PROXY_URL": litellm_proxy, "LITELLM_API_KEY": PROXY_ENV["LITELLM_MASTER_KEY"]}
    out = run(client_env, "python", "docs/examples/litellm_proxy_client.py")
    run(client_env, "bash", "docs/examples/trace_api_proxy.sh")
    for name in ("proxy-bot", "digest-bot"):
        row, _ = settled(agentmon_stack, name, runs=1, llm_calls=1, **MOCK_TOKENS)
        assert identity(row) == (name, "custom", None, "default-project")
        # The proxy's spans are in the run's trace, under its agent.
        [trace] = agentmon_stack.get(f"/agents/{row['id']}/traces")["items"]
        wanted = {f"invoke_agent {name}", "Received Proxy Server Request", "litellm_request", "raw_gen_ai_request"}
        spans: list[dict] = []

        def stored() -> bool:
            pending = list(agentmon_stack.get(f"/traces/{trace['trace_id']}")["roots"])
            spans.clear()
            while pending:
                spans.append(pending.pop())
                pending.extend(spans[-1]["children"])
            return wanted <= {span["name"] for span in spans}

        assert wait_until(stored, 15), [span["name"] for span in spans]
        assert {span["agent_id"] for span in spans} == {row["id"]}
    assert "Invoices 17 and 23." in out


def test_vanna(agentmon_stack: AgentmonStack, env: dict[str, str]) -> None:
    out = run(env, "python", "docs/examples/vanna_sql.py")
    row, _ = settled(agentmon_stack, "vanna-warehouse-prod", runs=1, llm_calls=1, **MOCK_TOKENS)
    assert identity(row) == ("vanna-warehouse-prod", "vanna", "warehouse-prod", "default-project")
    assert out.splitlines()[-1] == f"agent {row['id']}: SELECT count(*) FROM orders"


@pytest.fixture
def flow_servers() -> Iterator[dict[str, str]]:
    """The fake Langflow, Flowise and AutoGen Studio, with the guide's flows, keys and team."""
    langflow = FakeLangflow({FLOW_ID: "Support Flow"}, api_key="sk-your-langflow-key")
    flowise = FakeFlowise({CHATFLOW_ID: "Order Assistant"}, api_key="your-flowise-key")
    studio = FakeAutoGenStudio([studio_team_row(1, studio_team("Writing Team", [
        studio_agent("writer", "Drafts the text."), studio_agent("editor", "Reviews the draft.")]))])
    with ServedApp(langflow.app) as lf, ServedApp(flowise.app) as fw, ServedApp(studio.app) as st:
        yield {"LANGFLOW_URL": lf.url, "LANGFLOW_API_KEY": "sk-your-langflow-key",
               "FLOWISE_URL": fw.url, "FLOWISE_API_KEY": "your-flowise-key", "AUTOGEN_STUDIO_URL": st.url}


def test_langflow_flowise_and_autogen_studio(agentmon_stack: AgentmonStack, env: dict[str, str],
                                             flow_servers: dict[str, str]) -> None:
    env = {**env, **flow_servers}
    out = run(env, "python", "docs/examples/langflow_run.py", FLOW_ID, "What is our refund policy?")
    row, _ = settled(agentmon_stack, "Support Flow", runs=1, errors=0)
    assert identity(row) == ("Support Flow", "langflow", FLOW_ID, "default-project")
    assert out.strip() == f"agent {row['id']} (Support Flow): Echo: What is our refund policy?"

    out = run(env, "python", "docs/examples/flowise_predict.py", CHATFLOW_ID, "Where is order 7?")
    row, _ = settled(agentmon_stack, "Order Assistant", runs=1, errors=0)
    assert identity(row) == ("Order Assistant", "flowise", CHATFLOW_ID, "default-project")
    assert out.strip() == f"agent {row['id']} (Order Assistant): Echo: Where is order 7?"

    out = run(env, "python", "docs/examples/autogen_studio_register.py")
    for name in ("writer", "editor"):
        row, _ = settled(agentmon_stack, name, runs=0)
        assert identity(row) == (name, "autogen", None, "default-project")
        assert f"{row['id']}  {name}  (autogen)" in out


def test_otel_conventions(agentmon_stack: AgentmonStack, env: dict[str, str]) -> None:
    run(env, "python", "docs/examples/otel_conventions.py")
    for name, tokens in (("weather-agent", (120, 30)), ("research-agent", (200, 50)), ("trip-planner", (80, 20))):
        row, stats = settled(agentmon_stack, name, runs=1, llm_calls=1, input_tokens=tokens[0],
                             output_tokens=tokens[1])
        assert identity(row) == (name, "custom", None, "default-project")
        assert stats["cost_usd"] > 0  # priced from the price table: the spans carry no cost
