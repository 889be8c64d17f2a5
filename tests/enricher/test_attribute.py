from __future__ import annotations

from enricher.agents import AgentRef
from enricher.attribute import SpanRecord, TraceAttributor
from enricher.metrics import EnricherMetrics

T1, T2, T3 = b"\x01" * 16, b"\x02" * 16, b"\x03" * 16
PLANNER = AgentRef("id-planner", "planner", "custom")
WRITER = AgentRef("id-writer", "writer", "custom")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def span(trace: bytes, span_id: int, parent: int | None, agent: AgentRef | None = None, **kwargs) -> SpanRecord:
    return SpanRecord(trace, bytes([span_id]) * 8, bytes([parent]) * 8 if parent else b"", agent, **kwargs)


def owners(decisions) -> dict[int, str | None]:
    return {record.span_id[0]: (owner.name if owner else None) for record, owner in decisions}


def make(**kwargs):
    clock = Clock()
    metrics = EnricherMetrics()
    return TraceAttributor(metrics, clock=clock, **{"hold_seconds": 5.0, **kwargs}), clock, metrics


def test_child_llm_span_before_its_agent_in_an_earlier_request() -> None:
    attributor, _, _ = make()
    decided, released = attributor.process([span(T1, 2, 1)])  # chat span; its parent (the agent) not yet here
    assert decided == [] and released == [] and attributor.held_count == 1
    decided, released = attributor.process([span(T1, 1, 9, PLANNER), span(T1, 9, None)])
    assert owners(decided) == {1: "planner", 9: "planner"}  # the root above the agent belongs to it too
    assert owners(released) == {2: "planner"}
    assert attributor.held_count == 0


def test_nested_agents_each_span_gets_its_nearest_agent() -> None:
    attributor, _, _ = make()
    # planner(1) -> writer(2) -> chat(3); planner(1) -> chat(4). Children end first.
    decided, _ = attributor.process([span(T1, 3, 2), span(T1, 4, 1)])
    assert decided == []
    decided, released = attributor.process([span(T1, 2, 1, WRITER)])
    assert owners(decided) == {2: "writer"} and owners(released) == {3: "writer"}
    assert attributor.held_count == 1  # chat 4 waits: its ancestor may be another agent
    decided, released = attributor.process([span(T1, 1, None, PLANNER)])
    assert owners(decided) == {1: "planner"} and owners(released) == {4: "planner"}


def test_a_complete_trace_without_agents_passes_through_at_once_and_leaves_no_state() -> None:
    attributor, _, _ = make()
    decided, _ = attributor.process([span(T1, 2, 1), span(T1, 1, None)])
    assert owners(decided) == {2: None, 1: None}
    assert not attributor.knows(T1)


def test_timeout_releases_unstamped_and_counts() -> None:
    attributor, clock, metrics = make()
    attributor.process([span(T1, 2, 1)])
    assert attributor.expire() == []
    clock.now += 5.1
    assert owners(attributor.expire()) == {2: None}
    assert metrics.spans_released_on_timeout._value.get() == 1
    assert attributor.held_count == 0


def test_timeout_with_a_known_agent_stamps_it() -> None:
    attributor, clock, _ = make()
    # agent 1 known, but span 3's parent 2 never arrives: best effort is the trace's agent.
    attributor.process([span(T1, 1, 7, PLANNER)])
    decided, _ = attributor.process([span(T1, 3, 2)])
    assert decided == []
    clock.now += 6
    assert owners(attributor.expire()) == {3: "planner"}


def test_parent_trace_id_links_a_litellm_trace_to_the_agent_trace() -> None:
    attributor, _, _ = make()
    decided, _ = attributor.process([span(T2, 5, None, linked_trace=T1)])  # LiteLLM's own trace
    assert decided == []
    decided, released = attributor.process([span(T1, 1, None, PLANNER)])
    assert owners(released) == {5: "planner"}
    # Later spans of the linked trace are attributed at once.
    decided, _ = attributor.process([span(T2, 6, 5)])
    assert owners(decided) == {6: "planner"}


def test_resource_group_ties_langflow_llm_traces_to_the_flow() -> None:
    attributor, _, _ = make()
    decided, _ = attributor.process([span(T2, 5, None, group="g")])  # an LLM call as its own root trace
    assert decided == []
    flow = AgentRef("id-flow", "Support Flow", "langflow")
    _, released = attributor.process([span(T1, 1, None, flow, group="g")])
    assert owners(released) == {5: "Support Flow"}
    decided, _ = attributor.process([span(T3, 7, None, group="g")])  # the next run's LLM call
    assert owners(decided) == {7: "Support Flow"}


def test_hold_buffer_is_bounded_and_evictions_counted() -> None:
    attributor, _, metrics = make(hold_max_spans=100)
    for i in range(150):
        attributor.process([SpanRecord(i.to_bytes(16, "big"), b"\x02" * 8, b"\x01" * 8)])
    assert attributor.held_count == 100
    assert metrics.spans_evicted._value.get() == 50


def test_trace_state_is_bounded() -> None:
    attributor, _, _ = make(max_traces=50)
    for i in range(200):
        attributor.process([SpanRecord(i.to_bytes(16, "big"), b"\x01" * 8, b"", PLANNER)])
    assert len(attributor._traces) <= 50


def test_an_intermediate_agent_arriving_after_the_root_still_owns_its_children() -> None:
    attributor, _, _ = make()
    # planner(1, root) -> writer(2) -> chat(3); the root is exported before writer.
    decided, _ = attributor.process([span(T1, 3, 2), span(T1, 1, None, PLANNER)])
    assert owners(decided) == {1: "planner"}  # chat waits: its parent may be an agent
    _, released = attributor.process([span(T1, 2, 1, WRITER)])
    assert owners(released) == {3: "writer"}


def test_released_records_do_not_accumulate_in_the_fifo() -> None:
    attributor, clock, _ = make()
    attributor.process([span(T3, 9, 8)])  # one record that stays held
    for i in range(3000):
        trace = (i + 10).to_bytes(16, "big")
        attributor.process([SpanRecord(trace, b"\x02" * 8, b"\x01" * 8)])
        attributor.process([SpanRecord(trace, b"\x01" * 8, b"")])  # its root: the child is released
        attributor.expire()
    assert attributor.held_count == 1
    assert len(attributor._held) < 2000
    assert attributor._group_waiters == {}
