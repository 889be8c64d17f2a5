from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from enricher.identify.structured import MAX_TEXT, field_text, parse_mapping


def test_python_repr_as_litellm_writes_it() -> None:
    text = "{'agent_id': 'a2', 'parent_trace_id': 'abc', 'n': 3, 'ok': True, 'none': None, 'l': [1, (2, 3)]}"
    assert parse_mapping(text) == {"agent_id": "a2", "parent_trace_id": "abc", "n": 3, "ok": True, "none": None, "l": [1, [2, 3]]}
    assert field_text(text, "agent_id") == "a2"
    assert field_text(text, "missing") is None
    assert field_text(text, "l") is None  # only scalars become identity text


def test_json_as_openinference_writes_it() -> None:
    assert parse_mapping('{"agent_name": "x", "nested": {"a": 1}}') == {"agent_name": "x", "nested": {"a": 1}}


def test_nothing_is_ever_evaluated() -> None:
    for hostile in (
        "{'a': __import__('os').system('echo pwned')}",
        "{'a': open('/etc/passwd').read()}",
        "{**{'a': 1}}",
        "{'a': 1 + 1}",
        "{'a': [x for x in range(10)]}",
        "{'a': lambda: 1}",
    ):
        assert parse_mapping(hostile) is None, hostile


def test_size_and_depth_are_bounded() -> None:
    assert parse_mapping("{'a': '" + "x" * MAX_TEXT + "'}") is None
    assert parse_mapping("{'a': " + "[" * 50 + "]" * 50 + "}") is None
    assert parse_mapping("{'a': " + "[" * 5000 + "]" * 5000 + "}") is None
    assert parse_mapping("{" + ", ".join(f"'k{i}': {i}" for i in range(2000)) + "}") is None


def test_not_a_mapping() -> None:
    for text in ("", "[1, 2]", "'str'", "None", "{'a': 1", "{1: 2}"[:3]):
        assert parse_mapping(text) is None


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=300))
def test_never_raises_on_any_text(text: str) -> None:
    result = parse_mapping("{" + text)
    assert result is None or isinstance(result, dict)
    assert field_text(text, "agent_id") is None or isinstance(field_text(text, "agent_id"), str)


def test_huge_integers_are_rejected_not_raised() -> None:
    text = "{'agent_id': 0x" + "1" * 4000 + "}"
    assert parse_mapping(text) is None
    assert field_text(text, "agent_id") is None
