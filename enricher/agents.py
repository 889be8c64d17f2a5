"""The enricher's in-memory view of the registry.

Resolving an identity never waits on the database: a cache hit returns the agent, a
miss returns a provisional agent with the identity's deterministic id and queues the
row's creation for a background thread (like k8sattributesprocessor: an informer-fed
cache, never a remote call per item). Another thread re-reads the registry every few
seconds so PATCHed monitoring switches and names take effect quickly.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from enricher.identify.rules import Identification
from enricher.metrics import EnricherMetrics
from registry_api.store import Agent, AgentIdentity, AgentStore, LastUsedRecorder

log = logging.getLogger(__name__)

AGENT_ID_KEY = "metadata.agent_id"
AGENT_NAME_KEY = "metadata.agent_name"
AGENT_TYPE_KEY = "metadata.agent_type"
# On the span that starts an agent's run (its outermost span naming the agent), so that
# stats can count runs without joining spans to their parents.
AGENT_ROOT_KEY = "metadata.agent_root"
STAMP_KEYS = (AGENT_ID_KEY, AGENT_NAME_KEY, AGENT_TYPE_KEY)


def encode_attributes(pairs: list[tuple[str, str]]) -> bytes:
    """Serialized ``Span`` holding only these string attributes. Merging these bytes into a
    span (MergeFromString, or appending them to the span's bytes) adds the attributes:
    protobuf appends repeated fields, so no decode of the span is needed."""
    return Span(
        attributes=[KeyValue(key=key, value=AnyValue(string_value=value)) for key, value in pairs]
    ).SerializeToString()


@dataclass(frozen=True, slots=True)
class AgentRef:
    id: str
    name: str
    type: str
    monitored: bool = True
    provisional: bool = False
    # An id a span asserted (metadata.agent_id) that this view has not seen in the registry
    # yet: trusted until the next refresh, which the miss brings forward.
    unverified: bool = False

    @property
    def stamp(self) -> bytes:
        return _stamp_cache(self.id, self.name, self.type)

    @property
    def root_stamp(self) -> bytes:
        return _ROOT_MARK

    def stamp_without(self, present: frozenset[str]) -> bytes:
        """The stamp minus attributes the span already has (rare: explicit metadata)."""
        values = {AGENT_ID_KEY: self.id, AGENT_NAME_KEY: self.name, AGENT_TYPE_KEY: self.type}
        return encode_attributes([(key, values[key]) for key in STAMP_KEYS if key not in present])

    @classmethod
    def of(cls, agent: Agent) -> AgentRef:
        return cls(agent.id, agent.name, agent.type, monitored=agent.is_monitored)


_stamps: dict[tuple[str, str, str], bytes] = {}
_ROOT_MARK = encode_attributes([(AGENT_ROOT_KEY, "true")])


def _stamp_cache(agent_id: str, name: str, agent_type: str) -> bytes:
    key = (agent_id, name, agent_type)
    stamp = _stamps.get(key)
    if stamp is None:
        if len(_stamps) > 100_000:  # names change rarely; keep the cache bounded anyway
            _stamps.clear()
        stamp = _stamps[key] = encode_attributes(
            [(AGENT_ID_KEY, agent_id), (AGENT_NAME_KEY, name), (AGENT_TYPE_KEY, agent_type)]
        )
    return stamp


MIN_FORCED_REFRESH_SECONDS = 0.25


class AgentDirectory:
    def __init__(
        self,
        store: AgentStore,
        metrics: EnricherMetrics,
        *,
        recorder: LastUsedRecorder | None = None,
        refresh_seconds: float = 2.0,
        max_pending: int = 100_000,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._recorder = recorder
        self._refresh_seconds = refresh_seconds
        self._max_pending = max_pending
        self._by_id: dict[str, AgentRef] = {}
        self._by_key: dict[str, str] = {}  # identity key -> agent id
        self._by_external: dict[tuple[str, str, str], str] = {}
        self._by_name: dict[tuple[str, str], tuple[str, str | None]] = {}  # -> (id, external id)
        self._pending: dict[tuple[str, str], AgentIdentity] = {}
        self._retry_at: dict[tuple[str, str], tuple[float, float]] = {}  # -> (when, backoff)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._refresh_now = threading.Event()
        self._unknown_ids: set[str] = set()  # asserted ids the registry did not have
        self._threads: list[threading.Thread] = []
        self.loaded = threading.Event()

    # ---- hot path (the pipeline thread) ----------------------------------------

    def resolve(self, found: Identification) -> AgentRef | None:
        identity = found.identity
        if found.agent_id is not None:
            known = self._by_id.get(found.agent_id)
            if known is not None and (not known.provisional or known.unverified):
                return known
            if (known is None and identity is not None and found.agent_id != identity.agent_id
                    and found.agent_id not in self._unknown_ids):
                # The caller registered first and names its row's id (an agent with an external
                # id or a project, named here only by name): the view is just behind. Stamp the
                # asserted id rather than derive another, and re-read the registry now.
                ref = AgentRef(found.agent_id, identity.name, identity.type, provisional=True, unverified=True)
                with self._lock:
                    ref = self._by_id.setdefault(ref.id, ref)
                self._refresh_now.set()
                return ref
        if identity is None:
            return None  # an explicit id the registry does not know, and no name to register
        agent_id = self._by_key.get(identity.key)
        if agent_id is None:
            agent_id = self._lookup_row(identity)
        if agent_id is not None:
            ref = self._by_id.get(agent_id)
            if ref is not None:
                if ref.provisional:
                    self._enqueue(identity)  # not written yet (e.g. the queue was full): ask again
                elif identity.external_id is not None and ref.name != identity.name and not identity.name_is_placeholder:
                    self._enqueue(identity)  # renamed upstream: let the registry row follow
                return ref
        ref = AgentRef(identity.agent_id, identity.name, identity.type, provisional=True)
        if not self._enqueue(identity):
            return ref  # the registration queue is full: stamp now, remember nothing, ask again later
        with self._lock:
            ref = self._by_id.setdefault(ref.id, ref)
            self._by_key[identity.key] = ref.id
        return ref

    def by_id(self, agent_id: str) -> AgentRef | None:
        return self._by_id.get(agent_id)

    def mark_used(self, agent_ids: set[str]) -> None:
        if self._recorder is not None:
            for agent_id in agent_ids:
                self._recorder.mark_used(agent_id)

    # ---- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        for target, name in ((self._register_loop, "agent-registrar"), (self._refresh_loop, "agent-refresh")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if self._recorder is not None:
            self._recorder.start()

    def shutdown(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._refresh_now.set()
        with self._lock:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=timeout)
        self._threads.clear()
        if self._recorder is not None:
            self._recorder.shutdown()

    def refresh(self) -> None:
        """Re-read every agent (the registry is small); keeps provisional agents not yet written."""
        with self._lock:
            # Only asserted ids already waiting when the read starts can be judged by it.
            asserted_before = {agent_id for agent_id, ref in self._by_id.items() if ref.unverified}
        agents = self._store.all()
        by_id = {agent.id: AgentRef.of(agent) for agent in agents}
        by_external = {(a.project_id, a.type, a.external_id): a.id for a in agents if a.external_id is not None}
        by_name = {(a.project_id, a.name): (a.id, a.external_id) for a in agents}
        with self._lock:
            for agent_id, ref in self._by_id.items():
                if ref.provisional and agent_id not in by_id:
                    if ref.unverified and agent_id in asserted_before:
                        # Asserted but not in the registry: from now on its spans register by
                        # their name like any other (bounded: a flood of made-up ids is cut).
                        if len(self._unknown_ids) < 100_000:
                            self._unknown_ids.add(agent_id)
                        continue
                    by_id[agent_id] = ref
            self._by_id = by_id
            self._by_external = by_external
            self._by_name = by_name
        self.loaded.set()

    # ---- internals -----------------------------------------------------------------

    def _lookup_row(self, identity: AgentIdentity) -> str | None:
        agent_id = None
        if identity.external_id is not None:
            agent_id = self._by_external.get((identity.project_id, identity.type, identity.external_id))
        if agent_id is None:
            named = self._by_name.get((identity.project_id, identity.name))
            # A row of the same name with another external id is another agent (two flows
            # can share a name): only a row without one, or with this one, is this agent.
            if named is not None and named[1] in (None, identity.external_id):
                agent_id = named[0]
        if agent_id is not None:
            with self._lock:
                self._by_key[identity.key] = agent_id
        return agent_id

    def _enqueue(self, identity: AgentIdentity) -> bool:
        key = (identity.key, identity.name)
        with self._lock:
            if key in self._pending:
                return True
            if len(self._pending) >= self._max_pending:
                return False
            self._pending[key] = identity
            self._wake.notify()
            return True

    def _register_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                while not self._pending and not self._stop.is_set():
                    self._wake.wait()
                batch = list(self._pending.items())
            now = time.monotonic()
            failures = attempts = 0
            for pending_key, identity in batch:
                if self._stop.is_set():
                    return
                retry_at, backoff = self._retry_at.get(pending_key, (0.0, 0.0))
                if retry_at > now:
                    continue
                attempts += 1
                if not self._register(pending_key, identity):
                    failures += 1
                    # Each identity backs off on its own: one that cannot be written never
                    # holds up the others.
                    backoff = min(max(backoff * 2, 0.2), 30.0)
                    self._retry_at[pending_key] = (time.monotonic() + backoff, backoff)
            if attempts == 0 or failures:
                self._stop.wait(0.2)

    def _register(self, pending_key: tuple[str, str], identity: AgentIdentity) -> bool:
        try:
            agent, created = self._store.resolve_or_create(identity)
        except Exception as error:  # the registry is down: spans keep flowing, rows come later
            self._metrics.registry_errors.inc()
            log.warning("cannot register agent %r yet (%s); retrying", identity.name, error)
            return False
        if created:
            self._metrics.agents_created.inc()
            log.info("registered agent %s (%s, %s)", agent.name, agent.type, agent.id)
        ref = AgentRef.of(agent)
        with self._lock:
            self._by_id[agent.id] = ref
            self._by_key[identity.key] = agent.id
            if agent.id != identity.agent_id:
                # The row predates this identity's key (e.g. registered by name, now seen
                # with an external id): point the provisional id at the row.
                provisional = self._by_id.get(identity.agent_id)
                if provisional is not None and provisional.provisional:
                    self._by_id[identity.agent_id] = ref
            self._pending.pop(pending_key, None)
        self._retry_at.pop(pending_key, None)
        return True

    def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as error:
                self._metrics.registry_errors.inc()
                log.warning("cannot refresh agents from the registry: %s", error)
            self._refresh_now.wait(self._refresh_seconds)
            self._refresh_now.clear()
            # A burst of unknown asserted ids must not turn into back-to-back full reads.
            self._stop.wait(MIN_FORCED_REFRESH_SECONDS)
