"""Attribute every span to the agent of its trace.

Spans arrive children first: a parent ends after its children and SDKs export spans as
they end, so an agent run's LLM spans normally arrive before the span that names the
agent, often in an earlier request. This stage keeps a little state per trace and
decides, for each span, one of:

- an agent: the nearest agent ancestor in the trace; else, for spans above or beside
  the agents, the trace's outermost agent; else the agent of a trace it is linked to
  (``parent_trace_id`` metadata, span links) or of its resource group;
- ``None``: no agent (the trace is complete and names none): pass through unchanged;
- PENDING: it cannot be known yet: hold the span until it can, at most ``hold_seconds``.

Memory is bounded: at most ``hold_max_spans`` spans are held (the oldest are released
early and counted) and at most ``max_traces`` trace states are kept (least recently
used first out). Nothing here touches protobuf or the database: records carry an
opaque payload that the pipeline turns back into spans.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from enricher.agents import AgentRef
from enricher.metrics import EnricherMetrics

try:  # the per-span loops in C (enricher/_ancestry.c); the Python ones below do the same
    from enricher import _ancestry
except ImportError:  # built without a C compiler
    _ancestry = None

PENDING: Any = object()
MAX_CHAIN = 128
_NO_AGENTS: dict = {}  # shared by every _Trace without agents: never written to
MAX_PARENTS_PER_TRACE = 20_000
MAX_GROUPS = 10_000
_AT_ROOT: Any = object()  # walk_owners: the ancestry reached the root without an agent


# ---- the per-span loops, one run of spans of one trace at a time -------------------------
# Python versions of enricher/_ancestry.c's functions, used when it is not built.


def _trace_runs_py(ids: list[tuple[bytes, bytes, bytes]]) -> list[int]:
    """[start, end, start, end, ...] of the runs of consecutive spans of one trace."""
    runs: list[int] = []
    last = None
    for index, (trace_id, _, _) in enumerate(ids):
        if trace_id != last or not runs:
            if runs:
                runs.append(index)
            runs.append(index)
            last = trace_id
    if runs:
        runs.append(len(ids))
    return runs


def _record_parents_py(ids, start: int, end: int, parents: dict[bytes, bytes], cap: int) -> bool:
    """Each span's parent into ``parents`` while it holds fewer than ``cap``; whether a root came."""
    root = False
    for _, span_id, parent_id in ids[start:end]:
        if len(parents) < cap:
            parents[span_id] = parent_id
        if not parent_id:
            root = True
    return root


def _walk_owners_py(ids, start: int, end: int, parents, agents, pending, at_root, max_chain: int):
    """(owners, pending indexes, at-root indexes) of a run: each span's nearest agent at or
    above it, else ``at_root`` if its ancestry reaches the root, else ``pending`` (a gap, or a
    chain longer than max_chain). At-root indexes are listed only when ``at_root`` is not None."""
    owners: list[Any] = []
    waiting: list[int] = []
    roots: list[int] = []
    chain = range(max_chain)
    for index in range(start, end):
        owner = pending
        current = ids[index][1]
        for _ in chain:
            if agents:
                agent = agents.get(current)
                if agent is not None:
                    owner = agent
                    break
            parent = parents.get(current)
            if parent is None:
                break  # a gap: that ancestor has not arrived
            if not parent:
                owner = at_root
                break
            current = parent
        owners.append(owner)
        if owner is pending:
            waiting.append(index)
        elif owner is at_root and at_root is not None:
            roots.append(index)
    return owners, waiting, roots


MAX_CONTAINED_RUN = 64  # longer runs are not checked for being contained (the check is quadratic)


def _contained_runs_py(ids, bounds: list[int], special: list[int], max_run: int) -> list[int]:
    """The starts of the runs (``bounds`` as _trace_runs gives them) that need no trace state:
    at most ``max_run`` spans, no two with one span id, none whose index is in ``special`` (sorted),
    and every span's ancestry reaching a root span within the run."""
    starts: list[int] = []
    next_special = 0
    for start, end in zip(bounds[::2], bounds[1::2]):
        while next_special < len(special) and special[next_special] < start:
            next_special += 1
        if next_special < len(special) and special[next_special] < end or end - start > max_run:
            continue
        parents = {span_id: parent_id for _, span_id, parent_id in ids[start:end]}
        if len(parents) < end - start:
            continue  # a span id twice
        contained = True
        for span_id in parents:
            for _ in range(end - start + 1):
                parent = parents.get(span_id)
                if parent is None or not parent:
                    break
                span_id = parent
            if parent is None or parent:  # a gap, or a cycle
                contained = False
                break
        if contained:
            starts.append(start)
    return starts


if _ancestry is not None:
    _trace_runs, _record_parents, _walk_owners = _ancestry.trace_runs, _ancestry.record_parents, _ancestry.walk_owners
    _contained_runs = _ancestry.contained_runs
else:
    _trace_runs, _record_parents, _walk_owners = _trace_runs_py, _record_parents_py, _walk_owners_py
    _contained_runs = _contained_runs_py


@dataclass(slots=True)
class SpanRecord:
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    agent: AgentRef | None = None  # the agent this span itself names, if any
    linked_trace: bytes | None = None  # parent_trace_id metadata, else the first span link
    group: str | None = None
    payload: Any = None
    deadline: float = 0.0
    done: bool = False
    agent_from_resource: bool = False  # named by its resource (every span of it), not by itself
    run_root: bool = False  # set by the attributor: the span that starts a run of its agent


class _Trace:
    # A plain class: one is made per trace of every request. Most traces never get an agent
    # or a held span, so those two start as shared empty values, replaced on first write
    # (by process_batch and _hold only): every container made here is more work for the
    # garbage collector, which measurably dominated attribution before.
    __slots__ = ("agents", "parents", "root_seen", "linked", "group", "held", "touched", "outermost")

    def __init__(self) -> None:
        self.agents: dict[bytes, AgentRef] = _NO_AGENTS
        self.parents: dict[bytes, bytes] = {}
        self.root_seen = False
        self.linked: bytes | None = None
        self.group: str | None = None
        self.held: list[SpanRecord] | tuple[()] = ()
        self.touched = 0.0
        self.outermost: AgentRef | None = None  # cached; reset whenever the trace learns something


Decision = tuple[SpanRecord, AgentRef | None]


@dataclass(slots=True)
class SpanBatch:
    """One request's spans as columns, index-aligned: most spans are nothing but three ids,
    and a SpanRecord each would cost more than deciding them. The sparse maps hold what a
    few spans have (the meaning of each is SpanRecord's field of the same name)."""

    ids: list[tuple[bytes, bytes, bytes]]  # (trace_id, span_id, parent_span_id) of each span
    agents: dict[int, AgentRef] = field(default_factory=dict)
    from_resource: set[int] = field(default_factory=set)
    linked: dict[int, bytes] = field(default_factory=dict)
    groups: dict[int, str] = field(default_factory=dict)


@dataclass(slots=True)
class BatchResult:
    owners: list[Any]  # per span: its agent, None (no agent), or PENDING (held)
    held: dict[int, SpanRecord]  # the held spans' records (the caller sets their payload)
    run_roots: set[int]  # the spans that start a run of the agent they name
    released: list[Decision]  # spans held earlier whose agent this batch revealed


class TraceAttributor:
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
        # The traces of the request being decided that were kept without state (_stateless_runs).
        self._stateless_traces: set[bytes] = set()

    @property
    def held_count(self) -> int:
        return self._held_count

    def held(self) -> list[SpanRecord]:
        """The spans held now, oldest first (their payloads may be rewritten, nothing else)."""
        return [record for record in self._held if not record.done]

    def knows(self, trace_id: bytes) -> bool:
        """Whether this trace has state here (span links are followed only to such traces:
        waiting on links to unknown traces would delay all messaging traffic)."""
        return trace_id in self._traces

    # ---- the stage -------------------------------------------------------------------

    def process(self, records: list[SpanRecord]) -> tuple[list[Decision], list[Decision]]:
        """Decide ``records`` (one request's spans). Returns (decided now, released):
        ``released`` are spans held earlier whose agent this request revealed. Records
        in neither list are held."""
        batch = SpanBatch([(r.trace_id, r.span_id, r.parent_span_id) for r in records])
        for index, record in enumerate(records):
            if record.agent is not None:
                batch.agents[index] = record.agent
            if record.agent_from_resource:
                batch.from_resource.add(index)
            if record.linked_trace is not None:
                batch.linked[index] = record.linked_trace
            if record.group is not None:
                batch.groups[index] = record.group
        result = self.process_batch(batch, records)
        decided = [(record, owner) for record, owner in zip(records, result.owners) if owner is not PENDING]
        return decided, result.released

    def process_batch(self, batch: SpanBatch, records: list[SpanRecord] | None = None) -> BatchResult:
        """Decide one request's spans (``process`` with columns). A held span gets a
        SpanRecord (``records[index]`` when given), kept here until it is released."""
        now = self._clock()
        ids = batch.ids
        agents, groups = batch.agents, batch.groups
        touched: dict[bytes, _Trace] = {}
        new_groups: list[str] = []
        # Every span's parent, in span order (the order traces are created and evicted in),
        # a run of spans of one trace at a time: spans of a trace usually come together.
        bounds = _trace_runs(ids)
        runs = list(zip(bounds[::2], bounds[1::2]))
        special = sorted(agents.keys() | groups.keys() | batch.linked.keys()) if agents or groups or batch.linked else []
        # Most traffic is not an agent's: whole traces naming nothing, whose spans all get no
        # agent. Those are decided here without making trace state they would drop at once.
        stateless = self._stateless_runs(ids, bounds, special, batch.linked)
        if stateless:
            runs = [run for run in runs if run[0] not in stateless]
            self._stateless_traces = {ids[start][0] for start in stateless}
        for start, end in runs:
            trace_id = ids[start][0]
            trace = touched.get(trace_id)
            if trace is None:
                trace = self._trace(trace_id, now)
                trace.outermost = None
                touched[trace_id] = trace
            if _record_parents(ids, start, end, trace.parents, MAX_PARENTS_PER_TRACE):
                trace.root_seen = True
        # What the few spans with more than ids tell their traces, in span order too.
        if special:
            for index in special:
                trace_id, span_id, _ = ids[index]
                trace = touched[trace_id]
                agent, group = agents.get(index), groups.get(index)
                if agent is not None:
                    if trace.agents is _NO_AGENTS:
                        trace.agents = {}
                    trace.agents[span_id] = agent
                    if group is not None and self._groups.get(group) != agent:
                        self._learn_group(group, agent)
                        new_groups.append(group)
                if group is not None and trace.group is None:
                    trace.group = group
                linked = batch.linked.get(index)
                if linked is not None and trace.linked is None and linked != trace_id:
                    trace.linked = linked
                    self._dependents.setdefault(linked, set()).add(trace_id)

        run_roots = {
            index
            for index, agent in agents.items()
            if self._starts_run(touched[ids[index][0]], ids[index][2], agent, index in batch.from_resource)
        }

        owners: list[Any] = [None] * len(ids)  # the stateless runs' spans keep None
        held: dict[int, SpanRecord] = {}
        for start, end in runs:
            trace = touched[ids[start][0]]
            # No agent, link or group: no agent can be above any of its spans.
            simple = not trace.agents and trace.linked is None and trace.group is None
            run_owners, waiting, at_root = _walk_owners(
                ids, start, end, trace.parents, trace.agents, PENDING, None if simple else _AT_ROOT, MAX_CHAIN
            )
            if at_root:  # spans above or beside the agents, or of a trace without any
                above = self._owner_above_agents(trace)
                for index in at_root:
                    run_owners[index - start] = above
                if above is PENDING:
                    waiting = sorted(waiting + at_root)
            owners[start:end] = run_owners
            for index in waiting:
                if records is not None:
                    record = records[index]
                else:
                    trace_id, span_id, parent_id = ids[index]
                    record = SpanRecord(
                        trace_id, span_id, parent_id, agents.get(index), batch.linked.get(index),
                        groups.get(index), agent_from_resource=index in batch.from_resource,
                    )
                record.run_root = index in run_roots
                held[index] = record
                self._hold(trace, record, now)
        if records is not None:
            for index in agents:
                records[index].run_root = index in run_roots

        released = self._revisit(touched, new_groups)
        for trace_id, trace in touched.items():
            self._forget_if_finished(trace_id, trace)
        self._drop_traces_over_capacity()
        self._evict_over_capacity(released)
        if stateless:
            self._stateless_traces = set()
        return BatchResult(owners, held, run_roots, released)

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
        return self._owner_above_agents(trace)

    def _owner_above_agents(self, trace: _Trace) -> Any:
        """The owner of a span whose whole ancestry has arrived and names no agent."""
        if trace.agents:
            return self._outermost(trace)  # a span above or beside the agents
        return self._inherited(trace, depth=0)

    def _starts_run(self, trace: _Trace, parent_span_id: bytes, agent: AgentRef, from_resource: bool) -> bool:
        """Whether an agent span is the outermost span of its run. Its parent usually arrives
        later (parents end last), so an unknown parent counts as "not the same agent" - except
        for agents named by the resource, where every span names the agent: only a root starts."""
        if not parent_span_id:
            return True
        if from_resource:
            return False
        above = self._nearest_agent(trace, parent_span_id)[0]
        return above is None or above.id != agent.id

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
            if other is not None:
                if other.agents:
                    return self._outermost(other)
                inherited = self._inherited(other, depth + 1)
                if inherited is not None:
                    return inherited
                if not other.root_seen:
                    return PENDING
            elif trace.linked not in self._stateless_traces:
                return PENDING
            # else a whole trace of this request that names nothing, kept without state: it
            # has nothing to pass on, as if it had state (root seen, no agent, link or group).
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
        if trace.held:
            trace.held.append(record)
        else:
            trace.held = [record]
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

    def _stateless_runs(
        self, ids: list[tuple[bytes, bytes, bytes]], bounds: list[int], special: list[int], linked: dict[int, bytes]
    ) -> set[int]:
        """The starts of the runs whose spans all get no agent and whose trace would be
        forgotten at once (``_forget_if_finished``): a trace new here, that no other trace
        links to (before or in this request) and no other run of the request is of, whose
        spans name no agent, group or link, and whose every span's ancestry is complete
        within the run. (A trace linked to in this request must exist while its dependents
        are decided: they inherit from it.)"""
        starts = _contained_runs(ids, bounds, special, MAX_CONTAINED_RUN)
        if not starts:
            return set()
        traces, dependents, linked_to = self._traces, self._dependents, set(linked.values())
        run_traces = [ids[start][0] for start in bounds[::2]]
        repeated = set()
        if len(set(run_traces)) < len(run_traces):
            repeated = {trace_id for trace_id, runs in Counter(run_traces).items() if runs > 1}
        return {
            start for start in starts
            if (trace_id := ids[start][0]) not in traces and trace_id not in dependents and trace_id not in repeated
            and trace_id not in linked_to
        }

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
