"""The registry's data-access layer (no web framework here)."""

from registry_api.store.agents import (
    Agent,
    AgentFilter,
    AgentNameTaken,
    AgentPage,
    AgentStore,
    RegistryError,
    RegistryUnavailable,
)
from registry_api.store.database import create_registry_engine
from registry_api.store.identity import AGENT_STATUSES, AGENT_TYPES, DEFAULT_PROJECT, AgentIdentity
from registry_api.store.last_used import LastUsedRecorder

__all__ = [
    "AGENT_STATUSES",
    "AGENT_TYPES",
    "DEFAULT_PROJECT",
    "Agent",
    "AgentFilter",
    "AgentIdentity",
    "AgentNameTaken",
    "AgentPage",
    "AgentStore",
    "LastUsedRecorder",
    "RegistryError",
    "RegistryUnavailable",
    "create_registry_engine",
]
