"""Who an agent is, and the registry id that identity always maps to.

The id is a UUIDv5 of the identity, so every process computes the same id for the
same agent without asking the database. That lets the enricher stamp spans while
the registry is slow or down and create the row later.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

AGENT_TYPES: tuple[str, ...] = ("vanna", "langflow", "flowise", "autogen", "custom")
AGENT_STATUSES: tuple[str, ...] = ("active", "inactive")
DEFAULT_PROJECT = "default-project"

# Control characters become spaces ("Sales\tBot" stays two words); see __post_init__.
CONTROL_CHARACTERS = dict.fromkeys([*range(0x20), 0x7F], " ")

# Fixed forever: changing it would change every agent's id.
AGENT_ID_NAMESPACE = uuid.UUID("5b0c4c2e-7a7e-4a8e-9f5e-2f0a6d1e7c11")


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    name: str
    type: str = "custom"
    project_id: str = DEFAULT_PROJECT
    external_id: str | None = None
    # A name a rule made up from a template (``flowise-{project}``) rather than read from the
    # agent itself: good enough to create a row, never a reason to rename one.
    name_is_placeholder: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        # Surrounding white space never distinguishes two agents (MariaDB ignores trailing
        # spaces in comparisons), so it is dropped before the id is derived.
        for name in ("name", "project_id", "external_id"):
            value = getattr(self, name)
            if isinstance(value, str):
                # The key joins the fields with U+001F: a control character inside a field could
                # make two identities one. None belongs in a name, so each becomes a space.
                cleaned = value.translate(CONTROL_CHARACTERS).strip()
                if cleaned != value:
                    object.__setattr__(self, name, cleaned)
        if not self.name or len(self.name) > 255:
            raise ValueError("agent name must be 1 to 255 characters")
        if self.type not in AGENT_TYPES:
            raise ValueError(f"agent type must be one of {', '.join(AGENT_TYPES)}")
        if not self.project_id or len(self.project_id) > 255:
            raise ValueError("project_id must be 1 to 255 characters")
        if self.external_id is not None and (not self.external_id or len(self.external_id) > 255):
            raise ValueError("external_id must be 1 to 255 characters")

    @property
    def key(self) -> str:
        """The stable part of the identity: the external id when there is one, else the name.

        An agent with an external id (a Langflow flow id, a Flowise chatflow id, ...) keeps
        its id when its display name changes.
        """
        if self.external_id is not None:
            return f"ext\x1f{self.project_id}\x1f{self.type}\x1f{self.external_id}"
        return f"name\x1f{self.project_id}\x1f{self.name}"

    @property
    def agent_id(self) -> str:
        return str(uuid.uuid5(AGENT_ID_NAMESPACE, self.key))
