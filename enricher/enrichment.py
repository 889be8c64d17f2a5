"""Identify, attribute and stamp: what the enricher does to the spans of one request.

``Enrichment.process(seq, scanned)`` takes a request that a receiver scanned (``receive.scan``:
one C pass gives every span's ids and position, and which spans carry a key that some rule, an
announcement or a stamp is about). The ids become the attributor's columns; only the spans with
such a key get their attributes read and the rules tried; the request is then edited as bytes
(``enricher.wire``): stamps appended to spans, held and dropped spans cut out, and a request with
nothing to change is forwarded as received.

What comes out goes to ``Outputs`` (the pipeline): ``opened(seq, parts)`` says how many
deliveries will settle journal record ``seq``, ``deliver`` hands over stamped spans with the
parts they settle, and ``settled`` settles parts without a delivery (spans dropped on purpose).
The pipeline commits a record once all its parts are settled; this module knows nothing of
journals, sinks or threads. When held spans keep old records from being committed, the
pipeline asks for them to be carried forward (``carry_forward``): they go back to ``Outputs.carry``
as a request of their own, and from then on settle the new record instead.

Run announcements: a span carrying ``agentmon.announce`` (sent by the registry API when a
run starts, with the run's own trace and span id and its agent's explicit identity) is
fed to the attributor, so the trace knows that span id's agent and the run's LLM calls
are stamped at once instead of waiting for the run's span, which only comes at its end.
An announcement is never delivered downstream nor stored: it counts as consumed, and a
record holding nothing else is settled at once.
"""

from __future__ import annotations

import logging
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import compress
from typing import Any, Protocol

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from enricher.agents import AgentDirectory, AgentRef
from enricher.attribute import PENDING, BatchResult, Decision, SpanBatch, SpanRecord, TraceAttributor
from enricher.identify.rules import RuleSet, SpanView
from enricher.identify.span_attributes import span_name_and_attributes
from enricher.metrics import EnricherMetrics
from enricher.receive.scan import RequestScanner, ScannedRequest, ScopeScan
from enricher.stamp import STAMP_KEYS, SpanContext, encode_request, existing_stamp, stamp_for

log = logging.getLogger(__name__)

# A span carrying this attribute (the registry API sends "run") is a run announcement:
# learned from, never forwarded.
RUN_ANNOUNCE_KEY = "agentmon.announce"
_ANNOUNCE_MARKER = RUN_ANNOUNCE_KEY.encode()
# Besides the rules' keys, a span is read when it may be an announcement or already carry
# a stamp attribute (it keeps its own agent id).
_PIPELINE_KEYS = frozenset((RUN_ANNOUNCE_KEY, *STAMP_KEYS))


def scanner_for(rules: RuleSet, *, native: bool = True) -> RequestScanner:
    """The request scanner that finds every span this pipeline must read with these rules.
    When it can also look for every key the rules' answers depend on, it fingerprints the
    spans it finds, and the pipeline remembers its answers per fingerprint (``_read_scope``)."""
    needed = rules.scan_keys | _PIPELINE_KEYS
    outcome_keys = rules.outcome_keys
    if outcome_keys is not None and len(needed | outcome_keys) <= RequestScanner.MAX_KEYS:
        return RequestScanner(needed | outcome_keys, native=native, fingerprints=True)
    return RequestScanner(needed, native=native)


# What the rules say of one span: (identification, whether it is its resource's, the trace it
# names as its parent (hex), the stamp attributes it carries, whether it is a run announcement).
_Outcome = tuple[Any, bool, "str | None", "dict | None", bool]
_MAX_OUTCOMES = 10_000
_MAX_FINGERPRINT_BYTES = 1024  # longer ones (huge names or values) are not remembered: bounded memory


class _ResourceInfo:
    """What the rules say about one ResourceSpans, worked out once for all its spans."""

    __slots__ = ("attrs", "match", "group", "agent", "from_resource")

    def __init__(self, rules: RuleSet, directory: AgentDirectory, resource: bytes) -> None:
        self.attrs = {kv.key: kv.value for kv in Resource.FromString(resource).attributes}
        self.match = rules.identify_resource(self.attrs)
        self.group = rules.group_key(self.attrs) if rules.group_by else None
        # What a span that no span rule can match gets: the resource's agent, if any.
        self.agent: AgentRef | None = None
        self.from_resource = False
        if self.match is not None:
            try:
                self.agent = directory.resolve(self.match[1])
                self.from_resource = True
            except Exception:
                log.warning("cannot resolve the agent of a resource", exc_info=True)


class _Tally:
    """What happened to the spans of one batch, counted before the metrics are touched."""

    __slots__ = ("passed", "stamped", "conflicts", "dropped")

    def __init__(self) -> None:
        self.passed = self.stamped = self.conflicts = self.dropped = 0


def _starts_run_of(record: SpanRecord, owner: AgentRef | None) -> bool:
    return record.run_root and owner is not None and record.agent is not None and record.agent.id == owner.id


class _RequestSpans:
    """One request's spans as the attributor's columns, plus the few spans' extras."""

    __slots__ = ("batch", "existing", "announcements")

    def __init__(self, ids: list[tuple[bytes, bytes, bytes]]) -> None:
        self.batch = SpanBatch(ids)
        self.existing: dict[int, dict] = {}  # span -> the stamp attributes it already carries
        self.announcements: set[int] = set()

    def add_scope(self, first: int, count: int, resource: _ResourceInfo) -> None:
        """Gives a ScopeSpans' spans their resource's identity."""
        batch = self.batch
        indexes = range(first, first + count)
        if resource.agent is not None:
            batch.agents.update(dict.fromkeys(indexes, resource.agent))
        if resource.from_resource:
            batch.from_resource.update(indexes)
        if resource.group is not None:
            batch.groups.update(dict.fromkeys(indexes, resource.group))

    def set_identity(self, index: int, agent: AgentRef | None, from_resource: bool) -> None:
        """A span's own identification, which replaces its resource's."""
        batch = self.batch
        if agent is None:
            batch.agents.pop(index, None)
        else:
            batch.agents[index] = agent
        if from_resource:
            batch.from_resource.add(index)
        else:
            batch.from_resource.discard(index)

    def attribute(self, attributor: TraceAttributor) -> BatchResult:
        """The attributor's decisions. An announcement that names no agent has nothing to
        teach: it is left out (its owner reads as PENDING, and it is not held)."""
        silent = [index for index in self.announcements if index not in self.batch.agents]
        if not silent:
            return attributor.process_batch(self.batch)
        batch, skip = self.batch, set(silent)
        keep = [index for index in range(len(batch.ids)) if index not in skip]
        new_of = {old: new for new, old in enumerate(keep)}
        sub = SpanBatch(
            [batch.ids[i] for i in keep],
            {new_of[i]: agent for i, agent in batch.agents.items() if i in new_of},
            {new_of[i] for i in batch.from_resource if i in new_of},
            {new_of[i]: trace for i, trace in batch.linked.items() if i in new_of},
            {new_of[i]: group for i, group in batch.groups.items() if i in new_of},
        )
        result = attributor.process_batch(sub)
        owners: list = [PENDING] * len(batch.ids)
        for new, owner in enumerate(result.owners):
            owners[keep[new]] = owner
        return BatchResult(
            owners,
            {keep[new]: record for new, record in result.held.items()},
            {keep[new] for new in result.run_roots},
            result.released,
        )


class _SpanContexts:
    """The SpanContext of each span's ScopeSpans, made once per ScopeSpans (held spans only)."""

    __slots__ = ("_firsts", "_scopes", "_made")

    def __init__(self, scanned: ScannedRequest) -> None:
        pairs = [(scope, resource) for resource in scanned.resources for scope in resource.scopes if scope.count]
        self._firsts = [scope.first for scope, _ in pairs]
        self._scopes = pairs
        self._made: dict[int, SpanContext] = {}

    def of(self, index: int) -> SpanContext:
        at = bisect_right(self._firsts, index) - 1
        context = self._made.get(at)
        if context is None:
            scope, resource = self._scopes[at]
            context = self._made[at] = SpanContext(resource.resource, resource.schema_url, scope.scope, scope.schema_url)
        return context


class Outputs(Protocol):
    """Where an ``Enrichment`` sends what it decided (the pipeline's journal bookkeeping and sinks)."""

    def opened(self, seq: int, parts: int) -> None:
        """Record ``seq`` is processed; ``parts`` more deliveries (or settlements) will settle it."""

    def deliver(self, payload: bytes, span_count: int, parts: dict[int, int]) -> None:
        """Stamped spans to send downstream; once delivered they settle ``parts`` ({seq: count})."""

    def settled(self, parts: dict[int, int]) -> None:
        """Parts settled without a delivery (spans dropped on purpose)."""

    def carry(self, payload: bytes, span_count: int, parts: dict[int, int]) -> int | None:
        """Held spans to journal again as a new record (one part per span), settling ``parts``;
        returns the new record's seq, or None if it cannot be journaled now."""


class Enrichment:
    """Identify, attribute and stamp, one request at a time, from one thread."""

    def __init__(
        self,
        *,
        rules: RuleSet,
        directory: AgentDirectory,
        attributor: TraceAttributor,
        metrics: EnricherMetrics,
        drop_unmonitored: bool = True,
        scanner: RequestScanner | None = None,
    ) -> None:
        self._rules = rules
        # The scanner that requests given to ``process`` were scanned with: its keys and hit bits.
        self.scanner = scanner or scanner_for(rules)
        self._directory = directory
        self._attributor = attributor
        self._metrics = metrics
        self._drop_unmonitored = drop_unmonitored
        self._outputs: Outputs | None = None
        self._masks: dict[frozenset[str], int] = {}  # a ScopeFilter's keys -> their scanner hit bits
        # (id(ScopeFilter), resource match, span fingerprint) -> (the ScopeFilter, its outcome).
        self._outcomes: dict[tuple, tuple[object, _Outcome]] = {}
        self._accounted = -1  # the last request opened and delivered by _process

    def start(self, outputs: Outputs) -> None:
        self._outputs = outputs

    def expire(self) -> None:
        """Send the held spans whose time is up."""
        self._emit(self._attributor.expire())

    def release_all(self) -> None:
        """Send every held span (at shutdown)."""
        self._emit(self._attributor.release_all())

    def held_from(self, seq: int) -> int:
        """How many spans of journal record ``seq`` are held here."""
        return sum(1 for record in self._held() if record.payload[0] == seq)

    def _held(self) -> list[SpanRecord]:
        # A request that failed half-way may leave held spans without their bytes: it was
        # forwarded whole, so those have nothing to deliver nor journal record to settle.
        return [record for record in self._attributor.held() if record.payload is not None]

    def carry_forward(self, upto: int, max_record_bytes: int) -> int:
        """Journal again, by themselves, the held spans that came from records up to ``upto``
        (in requests of about ``max_record_bytes`` at most), so that those records can be
        committed; returns how many bytes were journaled."""
        held = [record for record in self._held() if record.payload[0] <= upto]
        # Oldest records first: when the journal is short of room, committing the records the
        # first requests relieved makes room for the next ones.
        held.sort(key=_seq_of)
        carried = journaled = 0
        for chunk in _chunks_of(held, max_record_bytes):
            payload = _request_of((record.payload[1], record.payload[2]) for record in chunk)
            parts = Counter(record.payload[0] for record in chunk)
            new_seq = self._outputs.carry(payload, len(chunk), dict(parts))
            if new_seq is None:
                break  # the journal is full: the rest stay where they are
            for record in chunk:
                record.payload = (new_seq, *record.payload[1:])
            carried += len(chunk)
            journaled += len(payload)
        if carried:
            self._metrics.spans_carried_forward.inc(carried)
        return journaled

    def process(self, seq: int, scanned: ScannedRequest) -> None:
        """Enrich one request; on any failure, forward it as received: an acknowledged span is never dropped."""
        try:
            self._process(seq, scanned)
        except Exception:
            if self._accounted == seq:
                log.exception("could not send the held spans that request %d released", seq)
                return
            log.exception("could not enrich request %d; forwarding it as received", seq)
            payload, span_count = scanned.payload, scanned.span_count
            if _ANNOUNCE_MARKER in payload:  # announcements are never forwarded, even here
                payload, span_count = _without_announcements(payload)
            # Spans of it that the attributor holds with this seq settle it too, when released.
            self._outputs.opened(seq, (1 if span_count else 0) + self.held_from(seq))
            if span_count:
                self._outputs.deliver(payload, span_count, {seq: 1})

    def _process(self, seq: int, scanned: ScannedRequest) -> None:
        """Identify, attribute and stamp one request's spans, and deliver what is decided.
        Only spans that carry a key some rule looks at get their attributes read
        (``_read_scope``); the request is edited as bytes (``enricher.wire``)."""
        spans = _RequestSpans(scanned.ids)
        hit_spans = sorted(scanned.hits)  # already in order from the C scan: sorting is a check
        for resource_scan in scanned.resources:
            resource = _ResourceInfo(self._rules, self._directory, resource_scan.resource)
            for scope in resource_scan.scopes:
                if scope.count:
                    self._read_scope(spans, scanned, hit_spans, resource, scope)
        self._follow_links(spans, scanned)
        span_total = scanned.span_count
        announcements = len(spans.announcements)
        if announcements:
            self._metrics.run_announcements.inc(announcements)
        self._metrics.spans_received.inc(span_total - announcements)

        result = spans.attribute(self._attributor)
        # Span index -> bytes to append to it, or None to remove it.
        edits: dict[int, bytes | None] = dict.fromkeys(spans.announcements)  # learned from, never delivered
        # Held spans leave the request first, as self-contained bytes: nothing that follows
        # may leave the attributor holding a reference into this request.
        if result.held:
            contexts = _SpanContexts(scanned)
            for index, record in result.held.items():
                record.payload = (seq, contexts.of(index), scanned.span_bytes(index), spans.existing.get(index))
                edits[index] = None

        used: set[str] = set()
        tally = _Tally()
        self._stamp_decided(spans, result, edits, tally, used)
        self._count(tally)

        removed = sum(1 for extra in edits.values() if extra is None)
        remaining = span_total - removed
        payload = scanned.payload
        if remaining and edits:  # else nothing stamped, held or removed: forwarded as received
            payload = scanned.rewrite(edits)
        self._outputs.opened(seq, len(result.held) + (1 if remaining else 0))
        if remaining:
            self._outputs.deliver(payload, remaining, {seq: 1})
        self._accounted = seq  # from here on, a failure must not open or deliver this request again
        self._emit(result.released)
        self._directory.mark_used(used)

    def _stamp_decided(self, spans: _RequestSpans, result: BatchResult, edits, tally: _Tally, used: set[str]) -> None:
        """Fill ``edits`` with the stamps (or removals) of the spans decided at once."""
        owners, run_roots, existing = result.owners, result.run_roots, spans.existing
        skip = spans.announcements
        special = skip | existing.keys() | run_roots  # the few spans that need more than a plain stamp
        plain: dict[int, bytes | None] = {}  # id(owner) -> its plain stamp, once per owner
        stamped = dropped = 0
        # compress() skips the spans without an owner (None) at C speed: most of them.
        for index in compress(range(len(owners)), owners):
            owner = owners[index]
            if owner is PENDING:
                continue
            if index in special:
                if index in skip:
                    continue
                stamp = self._stamp_decision(owner, existing.get(index), index in run_roots, tally, used)
            else:
                key = id(owner)
                if key in plain:
                    stamp = plain[key]
                else:
                    stamp = plain[key] = self._stamp_decision(owner, None, False, _Tally(), used)
                if stamp is None:
                    dropped += 1
                else:
                    stamped += 1
            if stamp != b"":
                edits[index] = stamp
        tally.stamped += stamped
        tally.dropped += dropped
        tally.passed += owners.count(None)

    def _read_scope(
        self, spans: _RequestSpans, scanned: ScannedRequest, hit_spans: list[int], resource: _ResourceInfo,
        scope: ScopeScan,
    ) -> None:
        """Give one ScopeSpans' spans their identities.

        A span that carries none of the keys that the rules, announcements and existing stamps
        are about (the scanner found its attribute keys) can only be its resource's agent: its
        attributes are not read. When the rules cannot say which keys matter, every span is read."""
        first, count = scope.first, scope.count
        spans.add_scope(first, count, resource)
        scope_filter = self._rules.scope_filter(resource.attrs, scope.name)
        mask = self._mask(scope_filter.keys)
        if mask is None:
            candidates: Iterable[int] = range(first, first + count)
        else:
            # This scope's spans with hits: a slice of the request's, found by bisection.
            hits = scanned.hits
            scope_hits = hit_spans[bisect_left(hit_spans, first):bisect_left(hit_spans, first + count)]
            candidates = [index for index in scope_hits if hits[index] & mask]
        fingerprints, outcomes = scanned.fingerprints, self._outcomes
        for index in candidates:
            fingerprint = fingerprints.get(index)
            if fingerprint is not None and len(fingerprint) > _MAX_FINGERPRINT_BYTES:
                fingerprint = None
            if fingerprint is not None:
                # The rules' answer is a function of the fingerprint here: most agent spans
                # repeat one of a few, and are then neither parsed nor tried against the rules.
                key = (id(scope_filter), resource.match, fingerprint)
                known = outcomes.get(key)
                if known is not None and known[0] is scope_filter:
                    self._apply_outcome(spans, index, known[1])
                    continue
            name, attrs = span_name_and_attributes(scanned.span_bytes(index))
            outcome = self._span_outcome(resource, scope_filter, SpanView(attrs, resource.attrs, name, scope.name))
            if fingerprint is not None:
                if len(outcomes) >= _MAX_OUTCOMES:  # fingerprints come from spans: bounded memory
                    outcomes.clear()
                outcomes[key] = (scope_filter, outcome)
            self._apply_outcome(spans, index, outcome)

    def _mask(self, rule_keys: frozenset[str] | None) -> int | None:
        """The scanner's hit bits for a scope filter's keys and the pipeline's own; None when
        every span must be read (the rules cannot tell, or the scanner lacks a key)."""
        if rule_keys is None:
            return None
        mask = self._masks.get(rule_keys, -1)
        if mask == -1:
            keys = rule_keys | _PIPELINE_KEYS
            mask = self.scanner.mask(keys) if keys <= frozenset(self.scanner.keys) else None
            if len(self._masks) > 64:  # keys depend on few scope names: this rarely fills
                self._masks.clear()
            self._masks[rule_keys] = mask
        return mask

    def _follow_links(self, spans: _RequestSpans, scanned: ScannedRequest) -> None:
        """Span links: followed (to traces known here) by spans that no rule linked elsewhere."""
        linked, knows = spans.batch.linked, self._attributor.knows
        for index, trace_id in scanned.links.items():
            if index not in linked and knows(trace_id):
                linked[index] = trace_id

    def _span_outcome(self, resource: _ResourceInfo, scope_filter, view: SpanView) -> _Outcome:
        """The full treatment: every rule tried on the span's attributes."""
        rules = self._rules
        try:
            found = rules.identify_span(view, resource.match, scope_filter)
            from_resource = resource.match is not None and found is resource.match[1]
            linked = rules.parent_trace_id(view)
        except Exception:  # hostile attribute values: this span names no agent
            log.warning("identity rules failed on span %r", view.span_name, exc_info=True)
            found, linked, from_resource = None, None, False
        attrs = view.span_attrs
        return found, from_resource, linked, existing_stamp(attrs), RUN_ANNOUNCE_KEY in attrs

    def _apply_outcome(self, spans: _RequestSpans, index: int, outcome: _Outcome) -> None:
        found, from_resource, linked, existing, announcement = outcome
        agent = None
        if found is not None:
            try:
                agent = self._directory.resolve(found)
            except Exception:
                log.warning("cannot resolve the agent of a span", exc_info=True)
                from_resource, linked = False, None
        spans.set_identity(index, agent, from_resource)
        if linked:
            spans.batch.linked[index] = bytes.fromhex(linked)
        if existing is not None:
            spans.existing[index] = existing
        if announcement:
            spans.announcements.add(index)

    def _stamp_decision(
        self, owner: AgentRef | None, existing, run_root: bool, tally: _Tally, used: set[str]
    ) -> bytes | None:
        """The bytes to append to a span for ``owner`` (b"" for none), or None to drop it."""
        if owner is None:
            tally.passed += 1
            return b""
        if not owner.monitored and self._drop_unmonitored:
            tally.dropped += 1
            return None
        used.add(owner.id)
        stamp = stamp_for(owner, existing)
        if stamp is None:
            tally.conflicts += 1  # the span names another agent id: kept as sent
            return b""
        tally.stamped += 1
        return stamp + owner.root_stamp if run_root else stamp

    def _count(self, tally: _Tally) -> None:
        # Once per batch, not per span: each Prometheus increment takes a lock.
        metrics = self._metrics
        if tally.passed:
            metrics.spans_passed_through.inc(tally.passed)
        if tally.stamped:
            metrics.spans_stamped.inc(tally.stamped)
        if tally.conflicts:
            metrics.agent_id_conflicts.inc(tally.conflicts)
        if tally.dropped:
            metrics.spans_dropped.labels("monitoring_off").inc(tally.dropped)

    def _emit(self, released: list[Decision]) -> None:
        """Send spans released from the hold buffer, stamped, as one batch."""
        if not released:
            return
        kept: list[tuple[SpanContext, bytes]] = []
        parts: dict[int, int] = defaultdict(int)
        dropped: dict[int, int] = defaultdict(int)
        used: set[str] = set()
        tally = _Tally()
        for record, owner in released:
            if record.payload is None:  # see _held
                continue
            seq, context, span_bytes, existing = record.payload
            record.payload = None  # the FIFO may keep the record a while; not its bytes
            stamp = self._stamp_decision(owner, existing, _starts_run_of(record, owner), tally, used)
            if stamp is None:
                dropped[seq] += 1
                continue
            kept.append((context, span_bytes + stamp))
            parts[seq] += 1
        self._count(tally)
        if dropped:
            self._outputs.settled(dict(dropped))
        if kept:
            self._outputs.deliver(_request_of(kept), len(kept), dict(parts))
        self._directory.mark_used(used)


def _request_of(spans: Iterable[tuple[SpanContext, bytes]]) -> bytes:
    """Serialized spans, each with its ScopeSpans' context, as one request."""
    groups: dict[SpanContext, list[bytes]] = defaultdict(list)
    for context, span in spans:
        groups[context].append(span)
    return encode_request(groups.items())


def _seq_of(record: SpanRecord) -> int:
    return record.payload[0]


def _chunks_of(held: list[SpanRecord], max_bytes: int) -> Iterable[list[SpanRecord]]:
    """Held spans in runs whose bytes add up to about ``max_bytes`` at most (one span at least)."""
    chunk: list[SpanRecord] = []
    size = 0
    for record in held:
        span_size = len(record.payload[2])
        if chunk and size + span_size > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(record)
        size += span_size
    if chunk:
        yield chunk


def _without_announcements(payload: bytes) -> tuple[bytes, int]:
    """``payload`` without its run announcements, and the count of the spans left (error path only)."""
    request = ExportTraceServiceRequest.FromString(payload)
    count = 0
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            kept = [span for span in scope_spans.spans
                    if not any(kv.key == RUN_ANNOUNCE_KEY for kv in span.attributes)]
            if len(kept) != len(scope_spans.spans):
                del scope_spans.spans[:]
                scope_spans.spans.extend(kept)
            count += len(kept)
    return request.SerializeToString(), count
