"""The agent_run span names its agent completely: the enricher resolves it to the registered row
even before its registry view has that row (a run right after registering), projects included."""

from __future__ import annotations

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from agentmon.config import Settings
from enricher.identify.rules import SpanView, load_rules
from enricher.service import Enricher
from integrations.client import RegisteredAgent
from integrations.runs import agent_run, run_attributes
from registry_api.app import create_app
from registry_api.store import AgentIdentity
from registry_api.store.migrate import upgrade_registry
from tests.enricher.conftest import wait_until
from tests.integrations.conftest import AgentmonStack
from tests.support.otlp_sink import OtlpTestSink
from tests.support.servers import ServedApp


@pytest.mark.parametrize("project, external_id", [("default-project", None), ("team-a", None),
                                                  ("team-a", "flow-1"), ("default-project", "flow-1")])
def test_the_rules_give_the_registered_id_from_the_span_alone(project, external_id) -> None:
    agent_id = AgentIdentity(name="bot", type="langflow", project_id=project, external_id=external_id).agent_id
    agent = RegisteredAgent(agent_id, "bot", "langflow", project, external_id)
    view = SpanView({k: AnyValue(string_value=v) for k, v in run_attributes(agent).items()}, {}, "invoke_agent bot", "")
    rules = load_rules()
    found = rules.identify_span(view, rules.identify_resource({}))
    assert found.rule_id == "explicit-metadata"
    assert found.agent_id == agent_id and found.identity.agent_id == agent_id


def test_a_run_right_after_registering_in_a_project_stamps_the_registered_row(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade_registry(url)
    with OtlpTestSink() as collector:
        # The enricher read the (empty) registry at start and will not read it again during the test.
        settings = Settings(data_dir=tmp_path / "data", registry_url=url, grpc_port=0, http_port=0,
                            otlp_forward_endpoint=collector.endpoint, registry_refresh_seconds=300, hold_seconds=2)
        enricher = Enricher(settings)
        enricher.start()
        try:
            with ServedApp(create_app(settings)) as api:
                stack = AgentmonStack(enricher, api, collector, settings, api_key="")
                agent = stack.client(api_key=None).register("bot", "langflow", external_id="flow-1", project_id="team-a")
                with agent_run(agent, input="hi", tracer=stack.tracer_provider().get_tracer("app")):
                    pass
                [span] = stack.forwarded(count=1)
                assert span.stamp == (agent.id, "bot", "langflow")
                # The enricher asks the registry for the agent it has not seen: the row exists, nothing is created.
                assert wait_until(lambda: not enricher.directory._pending)
                assert enricher.metrics.agents_created._value.get() == 0
                rows = stack.agents()
                assert [(r["id"], r["project_id"]) for r in rows] == [(agent.id, "team-a")]  # no default-project twin
                stack.close()
        finally:
            enricher.stop(timeout=5)
