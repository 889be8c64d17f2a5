from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from registry_api.store import AgentIdentity


def test_same_identity_same_id_and_a_valid_uuid() -> None:
    a = AgentIdentity(name="support-bot", type="custom")
    b = AgentIdentity(name="support-bot", type="custom")
    assert a.agent_id == b.agent_id
    assert uuid.UUID(a.agent_id).version == 5


def test_id_is_stable_across_processes() -> None:
    code = "from registry_api.store import AgentIdentity; print(AgentIdentity(name='x', project_id='p').agent_id)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == AgentIdentity(name="x", project_id="p").agent_id


def test_external_id_keys_the_identity_so_a_rename_keeps_the_id() -> None:
    before = AgentIdentity(name="Support Flow", type="langflow", external_id="flow-1")
    after = AgentIdentity(name="Support Flow v2", type="langflow", external_id="flow-1")
    assert before.agent_id == after.agent_id
    assert before.agent_id != AgentIdentity(name="Support Flow", type="langflow").agent_id


def test_project_separates_agents() -> None:
    assert AgentIdentity(name="a", project_id="p1").agent_id != AgentIdentity(name="a", project_id="p2").agent_id


def test_surrounding_whitespace_is_not_identity() -> None:
    assert AgentIdentity(name=" a ").agent_id == AgentIdentity(name="a").agent_id
    assert AgentIdentity(name=" a ").name == "a"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 256},
        {"name": "a", "type": "crewai"},
        {"name": "a", "project_id": ""},
        {"name": "a", "external_id": ""},
    ],
)
def test_invalid_identities_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        AgentIdentity(**kwargs)
