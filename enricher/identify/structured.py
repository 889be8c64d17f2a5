"""Read small dicts that arrive as strings inside span attributes.

LiteLLM writes ``metadata.requester_metadata`` as a Python repr (``"{'agent_id': 'a2'}"``),
OpenInference writes ``metadata`` as JSON. Both are parsed here without ever
evaluating anything: JSON by the json module, Python literals by walking the syntax
tree of ``ast.parse`` and accepting only dict/list/tuple displays and constants.
Input size and nesting are bounded, so hostile strings cost little and never raise.
"""

from __future__ import annotations

import ast
import json
from typing import Any

MAX_TEXT = 16 * 1024
MAX_DEPTH = 8
MAX_ITEMS = 512


class _Rejected(Exception):
    pass


def parse_mapping(text: str) -> dict[str, Any] | None:
    """The dict ``text`` spells (JSON or a Python literal), or None if it is not one."""
    if not text or len(text) > MAX_TEXT:
        return None
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):
        value = _python_literal(stripped)
    return value if isinstance(value, dict) else None


def _python_literal(text: str) -> Any:
    try:
        tree = ast.parse(text, mode="eval")
        budget = [MAX_ITEMS]
        return _literal(tree.body, 0, budget)
    except (SyntaxError, ValueError, RecursionError, MemoryError, _Rejected):
        return None


def _literal(node: ast.AST, depth: int, budget: list[int]) -> Any:
    budget[0] -= 1
    if depth > MAX_DEPTH or budget[0] < 0:
        raise _Rejected
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool, type(None))):
        if isinstance(node.value, int) and not isinstance(node.value, bool) and node.value.bit_length() > 128:
            raise _Rejected  # no identity is a 40-digit number; str() of a huge one even raises
        return node.value
    if isinstance(node, ast.Dict):
        result: dict[Any, Any] = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:  # {**spread}
                raise _Rejected
            parsed_key = _literal(key, depth + 1, budget)
            if not isinstance(parsed_key, (str, int, float, bool, type(None))):
                raise _Rejected
            result[str(parsed_key) if not isinstance(parsed_key, str) else parsed_key] = _literal(
                value, depth + 1, budget
            )
        return result
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(item, depth + 1, budget) for item in node.elts]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        value = node.operand.value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value
    raise _Rejected


def field_text(text: str, field: str) -> str | None:
    """``text`` parsed as a dict, then its ``field`` as non-empty text (or None)."""
    mapping = parse_mapping(text)
    if mapping is None:
        return None
    value = mapping.get(field)
    if value is None or isinstance(value, (dict, list)):
        return None
    try:
        value = str(value).strip()
    except ValueError:  # e.g. an int too long to print
        return None
    return value or None
