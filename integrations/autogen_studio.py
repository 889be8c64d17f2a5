"""Register the agents of AutoGen Studio's teams in agentmon.

    from integrations.autogen_studio import register_autogen_studio_teams

    agents = register_autogen_studio_teams()   # AUTOGEN_STUDIO_URL, AUTOGEN_STUDIO_USER_ID, AGENTMON_URL

AutoGen itself needs no integration to be monitored: autogen-core 0.7 emits
``create_agent {name}`` / ``invoke_agent {name}`` spans (``gen_ai.system=autogen``) and
agentmon's built-in ``autogen`` rule recognises them (see docs/RULES.md). What Studio adds
is the list of agents before they ever run: ``GET /api/teams/`` answers
``{"status": true, "data": [team, ...]}``, each team a row whose ``component`` is the
team's component model; ``component.config.participants[].config.name`` are its agents
(a participant that is itself a team is read recursively).

Identity: an AutoGen agent is keyed on its **name** (type ``autogen``, no external id).
That is all its spans carry: ``gen_ai.agent.id`` is ``{name}_{team uuid}/{key}`` with a
uuid drawn afresh for every team object, and the Studio team id appears on no span. An
external id such as ``{team id}/{name}`` would give the registered row another agent id
than the one the enricher stamps on the spans. So one name is one agent, whichever teams
it serves (they are listed in the row's config). With ``project_id``, give the AutoGen
process the same project on its resource: ``OTEL_RESOURCE_ATTRIBUTES=agentmon.project.id=...``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from integrations.client import AgentmonClient, RegisteredAgent

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8081"  # `autogenstudio ui` default port
DEFAULT_USER_ID = "guestuser@gmail.com"  # Studio's user when authentication is off
MAX_DEPTH = 8  # nested teams


class AutoGenStudioError(RuntimeError):
    """AutoGen Studio refused the request, could not be reached, or answered something unreadable."""


@dataclass(frozen=True, slots=True)
class StudioAgent:
    name: str
    description: str | None = None
    provider: str | None = None  # e.g. autogen_agentchat.agents.AssistantAgent


@dataclass(frozen=True, slots=True)
class StudioTeam:
    id: str | None
    label: str | None
    provider: str | None
    agents: tuple[StudioAgent, ...]


def _object(value: Any) -> dict[str, Any] | None:
    """A dict, or a JSON object kept as a string (older Studio databases store components as text)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _participants(component: dict[str, Any]) -> list[Any]:
    config = _object(component.get("config")) or {}
    for holder in (config, component):
        participants = holder.get("participants")
        if isinstance(participants, list):
            return participants
    return []


def _agents_of(component: dict[str, Any], depth: int = 0) -> list[StudioAgent]:
    agents: list[StudioAgent] = []
    for entry in _participants(component):
        participant = _object(entry)
        if participant is None:
            log.warning("skipping an AutoGen Studio participant that is not an object: %.80r", entry)
            continue
        config = _object(participant.get("config")) or {}
        if participant.get("component_type") == "team" or (_participants(participant) and "name" not in participant):
            if depth < MAX_DEPTH:
                agents.extend(_agents_of(participant, depth + 1))  # a nested team: its members are the agents
            continue
        name = _text(config.get("name")) or _text(participant.get("name"))
        if name is None or len(name) > 255:
            log.warning("skipping an AutoGen Studio participant without a usable name: %.120r", participant)
            continue
        agents.append(StudioAgent(
            name=name,
            description=_text(config.get("description")) or _text(participant.get("description")),
            provider=_text(participant.get("provider")) or _text(participant.get("agent_type")),
        ))
    return agents


def _team_rows(payload: Any) -> list[Any]:
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        if payload.get("status") is False:
            raise AutoGenStudioError(f"AutoGen Studio reported a failure: {payload.get('message') or payload}")
        for key in ("data", "items", "teams"):
            data = payload.get(key)
            if isinstance(data, list):
                return data
            if isinstance(data, dict):
                inner = data.get("items")
                return inner if isinstance(inner, list) else [data]  # GET /api/teams/{id}: one team
        if any(key in payload for key in ("component", "config", "participants")):
            return [payload]  # a bare team component (an exported team JSON file)
    raise AutoGenStudioError(f"unexpected AutoGen Studio teams reply: {str(payload)[:200]!r}")


def parse_teams(payload: Any) -> list[StudioTeam]:
    """The teams, and their agents, in a ``/api/teams/`` reply (the ``{status, data}`` envelope, a bare
    list, one team row, or one team component as Studio exports it). Tolerant: entries it cannot read
    are skipped (and logged); only an envelope that says it failed, or no teams at all, raise."""
    teams: list[StudioTeam] = []
    for entry in _team_rows(payload):
        row = _object(entry)
        if row is None:
            log.warning("skipping an AutoGen Studio team that is not an object: %.80r", entry)
            continue
        component = _object(row.get("component")) or row
        config = _object(component.get("config")) or {}
        team_id = row.get("id")
        teams.append(StudioTeam(
            id=str(team_id) if team_id is not None and not isinstance(team_id, (dict, list)) else None,
            label=_text(component.get("label")) or _text(config.get("name")) or _text(row.get("name")),
            provider=_text(component.get("provider")) or _text(config.get("team_type")),
            agents=tuple(_agents_of(component)),
        ))
    return teams


class AutoGenStudioClient:
    """Reads AutoGen Studio's REST API. ``base_url`` defaults to AUTOGEN_STUDIO_URL or http://127.0.0.1:8081,
    ``user_id`` to AUTOGEN_STUDIO_USER_ID or Studio's guest user, ``token`` (a Bearer token, when Studio's
    authentication is on) to AUTOGEN_STUDIO_TOKEN."""

    def __init__(self, base_url: str | None = None, *, user_id: str | None = None, token: str | None = None,
                 timeout: float = 10.0, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = (base_url or os.environ.get("AUTOGEN_STUDIO_URL") or DEFAULT_URL).rstrip("/")
        self.user_id = user_id or os.environ.get("AUTOGEN_STUDIO_USER_ID") or DEFAULT_USER_ID
        token = token if token is not None else os.environ.get("AUTOGEN_STUDIO_TOKEN")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport,
                                  follow_redirects=True,
                                  headers={"Authorization": f"Bearer {token}"} if token else {})

    def list_teams(self) -> list[StudioTeam]:
        """``GET /api/teams/?user_id=...``, parsed."""
        return parse_teams(self._get("/api/teams/", params={"user_id": self.user_id}))

    def _get(self, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.get(path, **kwargs)
        except httpx.TimeoutException as error:
            raise AutoGenStudioError(f"AutoGen Studio at {self.base_url} did not answer GET {path} in time") from error
        except httpx.HTTPError as error:
            raise AutoGenStudioError(f"AutoGen Studio at {self.base_url} is unreachable: {error}") from error
        if response.status_code in (401, 403):
            raise AutoGenStudioError(
                f"AutoGen Studio refused GET {path} with {response.status_code}: set its token (AUTOGEN_STUDIO_TOKEN)")
        if response.status_code >= 400:
            raise AutoGenStudioError(f"AutoGen Studio GET {path} failed with {response.status_code}: "
                                     f"{response.text.strip()[:200]}")
        try:
            return response.json()
        except ValueError as error:
            raise AutoGenStudioError(f"AutoGen Studio GET {path} answered a body that is not JSON "
                                     f"(is {self.base_url} AutoGen Studio?): {response.text.strip()[:120]!r}") from error

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AutoGenStudioClient:
        return self

    def __exit__(self, *_) -> None:
        self.close()


def register_studio_agents(teams: Iterable[StudioTeam], agentmon: AgentmonClient, *, project_id: str | None = None,
                           studio_url: str | None = None) -> list[RegisteredAgent]:
    """Register every distinct agent name of ``teams`` as type autogen (no external id: see the module
    docstring). An agent in several teams is registered once; its config lists the teams."""
    members: dict[str, tuple[StudioAgent, list[dict[str, str | None]]]] = {}
    for team in teams:
        for agent in team.agents:
            entry = members.setdefault(agent.name, (agent, []))
            reference = {"id": team.id, "label": team.label}
            if reference not in entry[1]:
                entry[1].append(reference)
    registered = []
    for name, (agent, team_refs) in members.items():
        studio: dict[str, Any] = {"teams": team_refs}
        if studio_url:
            studio["url"] = studio_url
        config: dict[str, Any] = {"autogen_studio": studio}
        if agent.provider:
            config["provider"] = agent.provider
        if agent.description:
            config["description"] = agent.description[:1000]
        registered.append(agentmon.register(name, "autogen", project_id=project_id, config=config))
    return registered


def register_autogen_studio_teams(base_url: str | None = None, *, user_id: str | None = None,
                                  token: str | None = None, agentmon: AgentmonClient | None = None,
                                  project_id: str | None = None, timeout: float = 10.0,
                                  transport: httpx.BaseTransport | None = None) -> list[RegisteredAgent]:
    """Read the teams of an AutoGen Studio and register their agents in agentmon (idempotent).
    Raises AutoGenStudioError when Studio cannot be read, AgentmonError when agentmon refuses."""
    with AutoGenStudioClient(base_url, user_id=user_id, token=token, timeout=timeout, transport=transport) as studio:
        teams = studio.list_teams()
        owned = agentmon is None
        client = agentmon or AgentmonClient()
        try:
            return register_studio_agents(teams, client, project_id=project_id, studio_url=studio.base_url)
        finally:
            if owned:
                client.close()


def register_autogen_team(team: dict[str, Any] | str, *, agentmon: AgentmonClient | None = None,
                          project_id: str | None = None) -> list[RegisteredAgent]:
    """Register the agents of one team component (a dict, or the JSON text of a team exported from Studio,
    as ``autogenstudio serve --team`` uses)."""
    payload = _object(team) if isinstance(team, str) else team
    if payload is None:
        raise AutoGenStudioError("the team is not a JSON object")
    owned = agentmon is None
    client = agentmon or AgentmonClient()
    try:
        return register_studio_agents(parse_teams(payload), client, project_id=project_id)
    finally:
        if owned:
            client.close()
