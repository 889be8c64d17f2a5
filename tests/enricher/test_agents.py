"""AgentDirectory (enricher/agents.py): the registry view the hot path resolves agents in."""

from __future__ import annotations

import uuid

import pytest

from enricher.agents import AgentDirectory
from enricher.identify.rules import Identification
from enricher.metrics import EnricherMetrics
from registry_api.store import AgentIdentity, AgentStore, create_registry_engine
from registry_api.store.migrate import upgrade_registry
from tests.enricher.conftest import wait_until


@pytest.fixture
def directory(tmp_path):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade_registry(url)
    store = AgentStore(create_registry_engine(url))
    # A slow periodic refresh: anything seen sooner was brought forward by a miss.
    directory = AgentDirectory(store, EnricherMetrics(), refresh_seconds=60)
    directory.refresh()
    directory.start()
    yield directory, store
    directory.shutdown()
    store.engine.dispose()


def test_an_asserted_id_registered_after_the_last_refresh_is_stamped_as_asserted(directory) -> None:
    directory, store = directory
    # An integration registers first (external id: the row's id is not the name's), then its
    # LLM calls name the agent by id and name only (LiteLLM baggage keys).
    row, _ = store.resolve_or_create(AgentIdentity(name="vanna-prod", type="vanna", external_id="prod"))
    found = Identification("litellm-baggage", AgentIdentity(name="vanna-prod"), agent_id=row.id)
    assert AgentIdentity(name="vanna-prod").agent_id != row.id
    ref = directory.resolve(found)
    assert ref.id == row.id
    assert wait_until(lambda: not directory.resolve(found).provisional, 5)  # the miss brought a refresh forward
    assert directory.resolve(found).id == row.id
    assert [agent.id for agent in store.all()] == [row.id]  # nothing registered under the derived id


def test_an_asserted_id_the_registry_does_not_have_falls_back_to_the_name(directory) -> None:
    directory, store = directory
    made_up = str(uuid.uuid4())
    found = Identification("explicit-metadata", AgentIdentity(name="ghost"), agent_id=made_up)
    assert directory.resolve(found).id == made_up  # trusted until the registry is read
    derived = AgentIdentity(name="ghost").agent_id
    assert wait_until(lambda: directory.resolve(found).id == derived, 5)
    assert wait_until(lambda: store.get(derived) is not None, 5)
    assert store.get(made_up) is None
