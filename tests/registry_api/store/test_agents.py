from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from registry_api.store import AgentFilter, AgentIdentity, AgentNameTaken, AgentStore


def test_resolve_or_create_creates_once_with_the_deterministic_id(store: AgentStore) -> None:
    identity = AgentIdentity(name="sql-bot", type="vanna", external_id="conn-1")
    agent, created = store.resolve_or_create(identity, config={"db": "sales"})
    assert created
    assert agent.id == identity.agent_id
    assert (agent.name, agent.type, agent.project_id, agent.external_id) == ("sql-bot", "vanna", "default-project", "conn-1")
    assert agent.config == {"db": "sales"}
    assert agent.monitoring_enabled is True and agent.status == "active"
    assert agent.created_at is not None and agent.created_at.tzinfo is UTC
    assert abs(agent.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert agent.last_used_at is None

    again, created_again = store.resolve_or_create(identity)
    assert not created_again
    assert again == agent
    assert len(store.all()) == 1


def test_names_are_unique_per_project_and_case_sensitive(store: AgentStore) -> None:
    a, _ = store.resolve_or_create(AgentIdentity(name="bot", project_id="p1"))
    b, _ = store.resolve_or_create(AgentIdentity(name="bot", project_id="p2"))
    c, _ = store.resolve_or_create(AgentIdentity(name="Bot", project_id="p1"))
    assert len({a.id, b.id, c.id}) == 3


def test_external_id_lookup_keeps_one_row_when_the_display_name_changes(store: AgentStore) -> None:
    first, _ = store.resolve_or_create(AgentIdentity(name="Support", type="langflow", external_id="flow-9"))
    renamed, created = store.resolve_or_create(AgentIdentity(name="Support v2", type="langflow", external_id="flow-9"))
    assert not created
    assert renamed.id == first.id
    assert renamed.name == "Support v2"
    assert len(store.all()) == 1


def test_a_placeholder_name_never_renames_a_registered_agent(store: AgentStore) -> None:
    # Registered as "Order Assistant"; Flowise spans only yield the rule's "flowise-{id}".
    registered, _ = store.resolve_or_create(AgentIdentity(name="Order Assistant", type="flowise", external_id="cf-7"))
    seen, created = store.resolve_or_create(
        AgentIdentity(name="flowise-cf-7", type="flowise", external_id="cf-7", name_is_placeholder=True))
    assert not created and seen.id == registered.id and seen.name == "Order Assistant"
    assert store.get(registered.id).name == "Order Assistant"
    # The agent's own name still wins when it changes.
    renamed, _ = store.resolve_or_create(AgentIdentity(name="Order Bot", type="flowise", external_id="cf-7"))
    assert renamed.name == "Order Bot"


def test_a_name_only_row_learns_its_external_id(store: AgentStore) -> None:
    by_name, _ = store.resolve_or_create(AgentIdentity(name="flow", type="flowise"))
    with_ext, created = store.resolve_or_create(AgentIdentity(name="flow", type="flowise", external_id="cf-1"))
    assert not created and with_ext.id == by_name.id and with_ext.external_id == "cf-1"
    # ... and is found by that external id from then on, whatever the name.
    found, _ = store.resolve_or_create(AgentIdentity(name="flow renamed", type="flowise", external_id="cf-1"))
    assert found.id == by_name.id


def test_two_flows_with_the_same_name_get_two_rows(store: AgentStore) -> None:
    one, _ = store.resolve_or_create(AgentIdentity(name="Basic Prompting", type="langflow", external_id="f1"))
    two, created = store.resolve_or_create(AgentIdentity(name="Basic Prompting", type="langflow", external_id="f2"))
    assert created and one.id != two.id
    assert two.name == "Basic Prompting (f2)"
    # Idempotent for the second flow as well.
    again, created_again = store.resolve_or_create(AgentIdentity(name="Basic Prompting", type="langflow", external_id="f2"))
    assert not created_again and again.id == two.id and again.name == "Basic Prompting (f2)"


def test_get_unknown_is_none(store: AgentStore) -> None:
    assert store.get("00000000-0000-0000-0000-000000000000") is None


def test_update_fields_and_name_conflict(store: AgentStore) -> None:
    a, _ = store.resolve_or_create(AgentIdentity(name="a"))
    store.resolve_or_create(AgentIdentity(name="b"))
    updated = store.update(a.id, {"monitoring_enabled": False, "status": "inactive", "config": {"k": [1, 2]}})
    assert updated is not None
    assert (updated.monitoring_enabled, updated.status, updated.config) == (False, "inactive", {"k": [1, 2]})
    assert not updated.is_monitored
    # An update that changes nothing still returns the agent (MariaDB reports 0 affected rows).
    assert store.update(a.id, {"status": "inactive"}) == updated
    with pytest.raises(AgentNameTaken):
        store.update(a.id, {"name": "b"})
    assert store.update("missing", {"status": "active"}) is None
    with pytest.raises(ValueError):
        store.update(a.id, {"id": "x"})


def test_list_filters_sorting_and_pagination(store: AgentStore) -> None:
    for i, (name, type_, project) in enumerate(
        [("alpha", "vanna", "p1"), ("beta", "langflow", "p1"), ("Gamma_1", "langflow", "p2"), ("delta%", "custom", "p2")]
    ):
        agent, _ = store.resolve_or_create(AgentIdentity(name=name, type=type_, project_id=project))
        store.record_last_used({agent.id: datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=i)})
    gamma = next(a for a in store.all() if a.name == "Gamma_1")
    store.update(gamma.id, {"status": "inactive", "monitoring_enabled": False})

    assert [a.name for a in store.list(AgentFilter(type="langflow"), sort="name", descending=False).items] == [
        "Gamma_1",
        "beta",
    ]
    assert store.list(AgentFilter(project_id="p1")).total == 2
    assert [a.name for a in store.list(AgentFilter(status="inactive")).items] == ["Gamma_1"]
    assert store.list(AgentFilter(monitoring_enabled=True)).total == 3
    # Search is case-insensitive and treats LIKE wildcards literally.
    assert [a.name for a in store.list(AgentFilter(name_contains="GAMMA")).items] == ["Gamma_1"]
    assert [a.name for a in store.list(AgentFilter(name_contains="a_")).items] == ["Gamma_1"]
    assert [a.name for a in store.list(AgentFilter(name_contains="%")).items] == ["delta%"]
    newest_first = store.list(sort="last_used_at", descending=True)
    assert [a.name for a in newest_first.items] == ["delta%", "Gamma_1", "beta", "alpha"]
    page = store.list(sort="last_used_at", descending=False, limit=2, offset=1)
    assert page.total == 4 and [a.name for a in page.items] == ["beta", "Gamma_1"]


def test_record_last_used_never_moves_backwards(store: AgentStore) -> None:
    agent, _ = store.resolve_or_create(AgentIdentity(name="a"))
    later = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    store.record_last_used({agent.id: later})
    store.record_last_used({agent.id: later - timedelta(hours=1)})
    assert store.get(agent.id).last_used_at == later


def test_invalid_sort_is_rejected(store: AgentStore) -> None:
    with pytest.raises(ValueError):
        store.list(sort="id; DROP TABLE agents")  # type: ignore[arg-type]


def test_a_taken_disambiguated_name_falls_back_to_the_agent_id(store: AgentStore) -> None:
    store.resolve_or_create(AgentIdentity(name="foo", type="langflow", external_id="f0"))
    store.resolve_or_create(AgentIdentity(name="foo (f1)", type="custom"))
    identity = AgentIdentity(name="foo", type="langflow", external_id="f1")
    agent, created = store.resolve_or_create(identity)
    assert created and agent.id == identity.agent_id
    assert agent.name == f"foo ({identity.agent_id[:8]})"
