"""The attributor as it was before the batch (column) rewrite, kept as a reference model:
test_attribute_batch.py requires TraceAttributor to decide every span as this does.
Test code only. One deliberate change since: the trace limit (max_traces) is enforced at the
end of a request, after its finished traces are forgotten, not as each trace is made (which
could drop a trace of the request before its links were recorded)."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from enricher.agents import AgentRef
from enricher.attribute import PENDING, SpanRecord
from enricher.metrics import EnricherMetrics

MAX_CHAIN = 128
MAX_PARENTS_PER_TRACE = 20_000
MAX_GROUPS = 10_000


@dataclass(slots=True)
class _Trace:
    agents: dict[bytes, AgentRef] = field(default_factory=dict)
    parents: dict[bytes, bytes] = field(default_factory=dict)
    root_seen: bool = False
    linked: bytes | None = None
    group: str | None = None
    held: list[SpanRecord] = field(default_factory=list)
    touched: float = 0.0
    outermost: AgentRef | None = None  # cached; reset whenever the trace learns something


Decision = tuple[SpanRecord, AgentRef | None]


class ReferenceAttributor:
    def __init__(
        self,
        metrics: EnricherMetrics,
        *,
        hold_seconds: float = 10.0,
        hold_max_spans: int = 200_000,
        max_traces: int = 200_000,
        trace_ttl_seconds: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._hold_seconds = hold_seconds
        self._hold_max = hold_max_spans
        self._max_traces = max_traces
        self._trace_ttl = max(trace_ttl_seconds, hold_seconds * 2)
        self._clock = clock
        self._traces: OrderedDict[bytes, _Trace] = OrderedDict()
        self._groups: dict[str, AgentRef] = {}
        self._dependents: dict[bytes, set[bytes]] = {}  # trace -> traces linked to it
        self._group_waiters: dict[str, set[bytes]] = {}
        self._held: deque[SpanRecord] = deque()
        self._held_count = 0

    @property
    def held_count(self) -> int:
        return self._held_count

    def knows(self, trace_id: bytes) -> bool:
        """Whether this trace has state here (span links are followed only to such traces:
        waiting on links to unknown traces would delay all messaging traffic)."""
        return trace_id in self._traces

    # ---- the stage -------------------------------------------------------------------

    def process(self, records: list[SpanRecord]) -> tuple[list[Decision], list[Decision]]:
        """Decide ``records`` (one request's spans). Returns (decided now, released):
        ``released`` are spans held earlier whose agent this request revealed. Records
        in neither list are held."""
        now = self._clock()
        touched: dict[bytes, _Trace] = {}
        new_groups: list[str] = []
        for record in records:
            trace = touched.get(record.trace_id)
            if trace is None:
                trace = self._trace(record.trace_id, now)
                trace.outermost = None
                touched[record.trace_id] = trace
            if len(trace.parents) < MAX_PARENTS_PER_TRACE:
                trace.parents[record.span_id] = record.parent_span_id
            if not record.parent_span_id:
                trace.root_seen = True
            if record.agent is not None:
                trace.agents[record.span_id] = record.agent
                if record.group is not None and self._groups.get(record.group) != record.agent:
                    self._learn_group(record.group, record.agent)
                    new_groups.append(record.group)
            if record.group is not None and trace.group is None:
                trace.group = record.group
            if record.linked_trace is not None and trace.linked is None and record.linked_trace != record.trace_id:
                trace.linked = record.linked_trace
                self._dependents.setdefault(record.linked_trace, set()).add(record.trace_id)

        for record in records:
            if record.agent is not None:
                record.run_root = self._starts_run(touched[record.trace_id], record)

        decided: list[Decision] = []
        for record in records:
            trace = touched[record.trace_id]
            owner = self._owner(trace, record.span_id)
            if owner is PENDING:
                self._hold(trace, record, now)
            else:
                decided.append((record, owner))

        released = self._revisit(touched, new_groups)
        for trace_id, trace in touched.items():
            self._forget_if_finished(trace_id, trace)
        self._drop_traces_over_capacity()
        self._evict_over_capacity(released)
        return decided, released

    def expire(self) -> list[Decision]:
        """Release held spans whose time is up, with the best agent known by then
        (``None`` if none: those are counted as released on timeout)."""
        now = self._clock()
        released: list[Decision] = []
        while self._held and (self._held[0].done or self._held[0].deadline <= now):
            record = self._held.popleft()
            if not record.done:
                released.append(self._release_final(record, self._metrics.spans_released_on_timeout))
        if len(self._held) > 2 * self._held_count + 1024:
            # Records released early wait in the FIFO for their deadline; drop them in bulk.
            self._held = deque(record for record in self._held if not record.done)
        self._expire_traces(now)
        self._metrics.spans_held.set(self._held_count)
        return released

    def release_all(self) -> list[Decision]:
        """Everything held, decided as well as possible now (at shutdown)."""
        released = [self._release_final(r, None) for r in self._held if not r.done]
        self._held.clear()
        self._metrics.spans_held.set(0)
        return released

    # ---- deciding --------------------------------------------------------------------

    def _owner(self, trace: _Trace, span_id: bytes) -> Any:
        nearest, chain_complete = self._nearest_agent(trace, span_id)
        if nearest is not None:
            return nearest
        if not chain_complete:
            # An ancestor has not arrived, and it may be an agent (even after the root:
            # an intermediate agent span can end, and arrive, after its trace's root).
            return PENDING
        if trace.agents:
            return self._outermost(trace)  # a span above or beside the agents
        inherited = self._inherited(trace, depth=0)
        if inherited is not None:
            return inherited
        return None

    def _starts_run(self, trace: _Trace, record: SpanRecord) -> bool:
        """Whether an agent span is the outermost span of its run. Its parent usually arrives
        later (parents end last), so an unknown parent counts as "not the same agent" - except
        for agents named by the resource, where every span names the agent: only a root starts."""
        if not record.parent_span_id:
            return True
        if record.agent_from_resource:
            return False
        above = self._nearest_agent(trace, record.parent_span_id)[0]
        return above is None or above.id != record.agent.id

    def _nearest_agent(self, trace: _Trace, span_id: bytes) -> tuple[AgentRef | None, bool]:
        """(nearest agent at or above the span, whether its whole ancestry is known)."""
        agents, parents = trace.agents, trace.parents
        current = span_id
        for _ in range(MAX_CHAIN):
            agent = agents.get(current)
            if agent is not None:
                return agent, True
            parent = parents.get(current)
            if parent is None:
                return None, False  # a gap: that ancestor has not arrived
            if not parent:
                return None, True  # reached the root without meeting an agent
            current = parent
        return None, False

    def _outermost(self, trace: _Trace) -> AgentRef:
        """The agent of the trace with no agent above it (the run the others are part of)."""
        if trace.outermost is None:
            trace.outermost = next(iter(trace.agents.values()))
            for span_id, agent in trace.agents.items():
                parent = trace.parents.get(span_id)
                if not parent or self._nearest_agent(trace, parent)[0] is None:
                    trace.outermost = agent
                    break
        return trace.outermost

    def _inherited(self, trace: _Trace, depth: int) -> Any:
        """The agent of a linked trace or of the resource group, PENDING while it may still come."""
        if trace.linked is not None and depth < 4:
            other = self._traces.get(trace.linked)
            if other is None:
                return PENDING
            if other.agents:
                return self._outermost(other)
            inherited = self._inherited(other, depth + 1)
            if inherited is not None:
                return inherited
            if not other.root_seen:
                return PENDING
        if trace.group is not None:
            agent = self._groups.get(trace.group)
            return agent if agent is not None else PENDING
        return None

    def _learn_group(self, group: str, agent: AgentRef) -> None:
        self._groups.pop(group, None)
        self._groups[group] = agent
        if len(self._groups) > MAX_GROUPS:
            del self._groups[next(iter(self._groups))]

    # ---- holding and releasing ---------------------------------------------------------

    def _hold(self, trace: _Trace, record: SpanRecord, now: float) -> None:
        record.deadline = now + self._hold_seconds
        record.done = False
        trace.held.append(record)
        self._held.append(record)
        self._held_count += 1
        if trace.group is not None and trace.linked is None and not trace.agents:
            self._group_waiters.setdefault(trace.group, set()).add(record.trace_id)

    def _revisit(self, touched: dict[bytes, _Trace], new_groups: list[str]) -> list[Decision]:
        """Held spans of traces this request told us more about."""
        candidates: dict[bytes, _Trace] = {}
        for trace_id, trace in touched.items():
            if trace.held:
                candidates[trace_id] = trace
            for dependent_id in self._dependents.get(trace_id, ()):
                dependent = self._traces.get(dependent_id)
                if dependent is not None and dependent.held:
                    candidates[dependent_id] = dependent
        for group in new_groups:
            for waiter_id in self._group_waiters.pop(group, ()):
                waiter = self._traces.get(waiter_id)
                if waiter is not None and waiter.held:
                    candidates[waiter_id] = waiter
        released: list[Decision] = []
        for trace in candidates.values():
            still_held = []
            for record in trace.held:
                if record.done:
                    continue
                owner = self._owner(trace, record.span_id)
                if owner is PENDING:
                    still_held.append(record)
                else:
                    record.done = True
                    self._held_count -= 1
                    released.append((record, owner))
            trace.held = still_held
        return released

    def _release_final(self, record: SpanRecord, counter: Any) -> Decision:
        record.done = True
        self._held_count -= 1
        trace = self._traces.get(record.trace_id)
        owner = None
        if trace is not None:
            decided = self._owner(trace, record.span_id)
            if decided is PENDING:
                nearest = self._nearest_agent(trace, record.span_id)[0]
                decided = nearest or (self._outermost(trace) if trace.agents else None)
                if decided is None:
                    inherited = self._inherited(trace, depth=0)
                    decided = None if inherited is PENDING else inherited
            owner = decided
        if owner is None and counter is not None:
            counter.inc()
        return record, owner

    def _evict_over_capacity(self, released: list[Decision]) -> None:
        while self._held_count > self._hold_max and self._held:
            record = self._held.popleft()
            if not record.done:
                released.append(self._release_final(record, None))
                self._metrics.spans_evicted.inc()
        self._metrics.spans_held.set(self._held_count)

    # ---- trace state -------------------------------------------------------------------

    def _trace(self, trace_id: bytes, now: float) -> _Trace:
        trace = self._traces.get(trace_id)
        if trace is None:
            trace = self._traces[trace_id] = _Trace()
        else:
            self._traces.move_to_end(trace_id)
        trace.touched = now
        return trace

    def _forget_if_finished(self, trace_id: bytes, trace: _Trace) -> None:
        # A complete trace without agents, links or held spans needs no memory: most
        # traffic that is not an agent's passes through without leaving state behind.
        if (
            trace.root_seen
            and not trace.agents
            and not trace.held
            and trace.linked is None
            and trace.group is None
            and trace_id not in self._dependents
        ):
            self._traces.pop(trace_id, None)

    def _expire_traces(self, now: float) -> None:
        horizon = now - self._trace_ttl
        while self._traces:
            trace_id, trace = next(iter(self._traces.items()))
            if trace.touched > horizon:
                break
            if trace.held and any(not r.done for r in trace.held):
                self._traces.move_to_end(trace_id)
                trace.touched = now
                continue
            self._remove_trace(trace_id, trace)

    def _drop_traces_over_capacity(self) -> None:
        # After the request, not as each trace is made: the request's finished traces are
        # forgotten first, and a trace is never dropped half-way through being told its
        # links (which would leave its link behind in _dependents).
        while len(self._traces) > self._max_traces:
            trace_id, trace = next(iter(self._traces.items()))
            # Its held spans are still in the FIFO; they are released when their turn comes.
            self._remove_trace(trace_id, trace)

    def _remove_trace(self, trace_id: bytes, trace: _Trace) -> None:
        self._traces.pop(trace_id, None)
        self._dependents.pop(trace_id, None)
        if trace.linked is not None:
            dependents = self._dependents.get(trace.linked)
            if dependents is not None:
                dependents.discard(trace_id)
                if not dependents:
                    del self._dependents[trace.linked]
        if trace.group is not None:
            waiters = self._group_waiters.get(trace.group)
            if waiters is not None:
                waiters.discard(trace_id)
                if not waiters:
                    del self._group_waiters[trace.group]
