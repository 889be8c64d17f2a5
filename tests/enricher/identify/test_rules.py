from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from enricher.identify.rules import RuleError, SpanView, load_rules

FLOW_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


def attrs(**values) -> dict[str, AnyValue]:
    out = {}
    for key, value in values.items():
        key = key.replace("__", ".")
        if isinstance(value, bool):
            out[key] = AnyValue(bool_value=value)
        elif isinstance(value, int):
            out[key] = AnyValue(int_value=value)
        else:
            out[key] = AnyValue(string_value=value)
    return out


def identify(rules, span=None, resource=None, name="", scope=""):
    resource = resource or {}
    view = SpanView(span or {}, resource, name, scope)
    return rules.identify_span(view, rules.identify_resource(resource))


@pytest.fixture(scope="module")
def rules():
    return load_rules()


def test_service_name_alone_is_no_agent(rules) -> None:
    assert identify(rules, attrs(**{"gen_ai__operation__name": "chat"}), attrs(service__name="my-app")) is None


def test_explicit_metadata_wins_over_frameworks(rules) -> None:
    found = identify(rules, attrs(metadata__agent_name="billing", **{"gen_ai__operation__name": "invoke_agent", "gen_ai__agent__name": "other"}))
    assert found.rule_id == "explicit-metadata-name" and found.identity.name == "billing"
    by_id = identify(rules, attrs(metadata__agent_id="5b0c4c2e-0000-4000-8000-000000000001"))
    assert by_id.agent_id == "5b0c4c2e-0000-4000-8000-000000000001" and by_id.identity is None


def test_litellm_requester_metadata_python_repr(rules) -> None:
    span = attrs(metadata__requester_metadata="{'agent_name': 'support-bot', 'agent_type': 'custom', 'parent_trace_id': '" + "ab" * 16 + "'}")
    found = identify(rules, span)
    assert found.rule_id == "litellm-requester-metadata"
    assert found.identity.name == "support-bot"
    assert rules.parent_trace_id(SpanView(span, {})) == "ab" * 16


def test_litellm_baggage_and_spend_logs(rules) -> None:
    assert identify(rules, attrs(litellm__metadata__agent_name="a")).identity.name == "a"
    spend = attrs(metadata__spend_logs_metadata="{'agent_name': 'b'}")
    assert identify(rules, spend).identity.name == "b"


def test_parent_trace_id_must_be_a_trace_id(rules) -> None:
    assert rules.parent_trace_id(SpanView(attrs(metadata__parent_trace_id="not-hex"), {})) is None
    assert rules.parent_trace_id(SpanView(attrs(metadata__parent_trace_id="0" * 32), {})) is None
    assert rules.parent_trace_id(SpanView(attrs(metadata__parent_trace_id="AB" * 16), {})) == "ab" * 16


def test_autogen_and_genai(rules) -> None:
    found = identify(rules, attrs(gen_ai__system="autogen", gen_ai__operation__name="invoke_agent", gen_ai__agent__name="planner", gen_ai__agent__id="planner_9f1/default"))
    assert (found.rule_id, found.identity.name, found.identity.type, found.identity.external_id) == ("autogen", "planner", "autogen", None)
    generic = identify(rules, attrs(gen_ai__operation__name="invoke_agent", gen_ai__agent__name="weather", gen_ai__provider__name="openai"))
    assert (generic.rule_id, generic.identity.name, generic.identity.type) == ("genai-agent", "weather", "custom")


def test_langflow_phoenix_and_traceloop(rules) -> None:
    phoenix = identify(rules, attrs(langflow__flow_id=FLOW_ID, langflow__flow_name="Support Flow", openinference__span__kind="CHAIN"), name="Langflow")
    assert (phoenix.identity.name, phoenix.identity.type, phoenix.identity.external_id) == ("Support Flow", "langflow", FLOW_ID)
    assert not phoenix.identity.name_is_placeholder  # the flow's own name: a rename follows it
    traceloop = identify(rules, attrs(traceloop__span__kind="workflow"), name=f"Support Flow - {FLOW_ID}", scope="langflow")
    assert (traceloop.rule_id, traceloop.identity.name, traceloop.identity.external_id) == ("langflow-traceloop", "Support Flow", FLOW_ID)


def test_flowise_root_and_resource(rules) -> None:
    root = identify(rules, attrs(session__id="chat-1"), attrs(openinference__project__name=FLOW_ID), name="Flowise", scope="phoenix-tracer-1234")
    assert (root.identity.name, root.identity.type, root.identity.external_id) == (f"flowise-{FLOW_ID}", "flowise", FLOW_ID)
    assert root.identity.name_is_placeholder  # made up by the rule: it must not rename a registered chatflow
    resource = attrs(telemetry__sdk__language="nodejs", openinference__project__name="faq-bot", service__name="faq-bot")
    llm = identify(rules, attrs(openinference__span__kind="LLM"), resource, name="ChatOpenAI")
    assert (llm.rule_id, llm.identity.name, llm.identity.type, llm.identity.external_id) == ("flowise-resource", "faq-bot", "flowise", None)


def test_openinference_traceloop_langsmith_vanna(rules) -> None:
    assert identify(rules, attrs(openinference__span__kind="AGENT", agent__name="researcher")).identity.name == "researcher"
    assert identify(rules, attrs(traceloop__span__kind="agent", traceloop__entity__name="writer")).identity.name == "writer"
    assert identify(rules, attrs(langsmith__span__kind="chain", langsmith__trace__name="graph")).identity.name == "graph"
    vanna = identify(rules, attrs(vanna__connection_id="conn-1"))
    assert (vanna.identity.name, vanna.identity.type, vanna.identity.external_id) == ("vanna-conn-1", "vanna", "conn-1")


def test_project_from_agentmon_convention(rules) -> None:
    found = identify(rules, attrs(metadata__agent_name="a"), attrs(**{"agentmon__project__id": "team-x"}))
    assert found.identity.project_id == "team-x"
    resource_agent = identify(rules, attrs(), attrs(agentmon__agent__name="batch-job", agentmon__agent__type="custom"))
    assert resource_agent.rule_id == "agentmon-resource" and resource_agent.identity.name == "batch-job"


def test_group_key_includes_service(rules) -> None:
    assert rules.group_key(attrs(openinference__project__name="Support-Flow", service__name="unknown_service:python")) == "unknown_service:python\x1fSupport-Flow"
    assert rules.group_key(attrs(service__name="x")) is None


def test_user_rules_come_first_replace_and_disable(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        """
rules:
  - id: my-team-convention
    when: {span:app.agent: {exists: true}, resource:deployment.environment: prod}
    identity: {name: '=prod-{span:app.agent}', type: =custom, project_id: =prod}
  - id: genai-agent
    when: {span:gen_ai.agent.name: {exists: true}}
    identity: {name: span:gen_ai.agent.name, type: =autogen}
disable: [langsmith-trace]
group_by: []
"""
    )
    rules = load_rules(path)
    found = identify(rules, attrs(app__agent="x"), attrs(deployment__environment="prod"))
    assert (found.identity.name, found.identity.project_id) == ("prod-x", "prod")
    assert identify(rules, attrs(app__agent="x"), attrs(deployment__environment="dev")) is None
    replaced = identify(rules, attrs(gen_ai__operation__name="invoke_agent", gen_ai__agent__name="w"))
    assert replaced.identity.type == "autogen"
    assert identify(rules, attrs(langsmith__span__kind="chain", langsmith__trace__name="g")) is None
    assert rules.group_key(attrs(openinference__project__name="p")) is None


@pytest.mark.parametrize(
    "text,message",
    [
        ("rules: [{id: x, when: {span:a: {exists: true}}}]", "needs a name"),
        ("rules: [{id: x, when: {bogus: 1}, identity: {name: span:a}}]", "cannot read source"),
        ("rules: [{id: x, when: {span:a: {regex: '('}}, identity: {name: span:a}}]", "bad regex"),
        ("disable: [no-such-rule]", "unknown built-in"),
        ("rulez: []", "unknown keys"),
        ("rules: [: bad", "not valid YAML"),
    ],
)
def test_bad_rule_files_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(RuleError, match=message):
        load_rules(path)
