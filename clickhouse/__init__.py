"""agentmon's ClickHouse side: the schema (schema.sql), the stats queries (queries/*.sql)
and the one way to connect (a ClickHouse server over HTTP, or embedded chDB)."""

from __future__ import annotations

import re
import threading
from functools import cache
from importlib import resources
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ADD_COLUMN = re.compile(r"ADD COLUMN IF NOT EXISTS (\w+ )")

# Operation names that make a span an LLM call (schema.sql's IsLlmCall): the GenAI
# conventions' and OpenLLMetry's, and LiteLLM's call types, which LiteLLM writes into
# gen_ai.operation.name and llm.request.type for every call but a sync completion.
LLM_OPERATIONS = (
    "chat", "text_completion", "generate_content", "embeddings",  # GenAI semantic conventions
    "completion", "embedding",  # OpenLLMetry llm.request.type
    "acompletion", "atext_completion", "aembedding", "responses", "aresponses",  # LiteLLM call types
    "anthropic_messages", "agenerate_content",
)
LLM_OPERATIONS_SQL = "(" + ", ".join(f"'{name}'" for name in LLM_OPERATIONS) + ")"
_chdb_clients: dict[str, Client] = {}
_chdb_lock = threading.Lock()


def _sql(name: str) -> str:
    return resources.files("clickhouse").joinpath(name).read_text()


def _check_identifiers(database: str, table: str) -> None:
    for value in (database, table):
        if not _IDENTIFIER.match(value):
            raise ValueError(f"not a plain ClickHouse identifier: {value!r}")


def schema_statements(database: str, table: str) -> list[str]:
    """The DDL of schema.sql for this database and table, one statement each."""
    _check_identifiers(database, table)
    text = (
        _sql("schema.sql")
        .replace("{llm_operations}", LLM_OPERATIONS_SQL)
        .replace("{database}", database)
        .replace("{table}", table)
    )
    statements = []
    for chunk in re.split(r"^;\s*$", text, flags=re.MULTILINE):
        body = "\n".join(line for line in chunk.splitlines() if not line.lstrip().startswith("--")).strip()
        if body:
            statements.append(body)
            # ADD COLUMN IF NOT EXISTS keeps the expression a table was first given; the same
            # definition as MODIFY COLUMN brings an existing table up to this version's
            # (a metadata change: parts already written keep their stored values).
            added = _ADD_COLUMN.search(body)
            if added:
                statements.append(body[: added.start()] + "MODIFY COLUMN " + added.group(1) + body[added.end():])
    return statements


@cache
def query_text(name: str) -> str:
    """A query from queries/, with {database} and {table} still to be filled by ``query``."""
    return _sql(f"queries/{name}.sql")


def query(name: str, database: str, table: str) -> str:
    """A stats query with the shared span facts included and the table named; its values
    stay server-side parameters ({name:Type}), never text pasted into the SQL."""
    _check_identifiers(database, table)
    text = query_text(name).replace("{span_facts}", query_text("span_facts"))
    return text.replace("{database}", database).replace("{table}", table)


def connect(url: str) -> Client:
    """A clickhouse-connect client for ``http(s)://...`` or ``chdb://PATH``.

    chDB opens a data directory from one process only, so every caller in this process
    shares one client per directory (the writer and the stats API in ``agentmon up``).
    """
    if url.startswith("chdb://"):
        with _chdb_lock:
            client = _chdb_clients.get(url)
            if client is None:
                client = _chdb_clients[url] = clickhouse_connect.get_client(dsn=url)
            return client
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "clickhouse"):
        raise ValueError(f"unsupported ClickHouse URL {url!r}: use http(s)://host:8123 or chdb://PATH")
    return clickhouse_connect.get_client(dsn=url, autogenerate_session_id=False)


def ensure_schema(client: Client, database: str, table: str) -> None:
    for statement in schema_statements(database, table):
        client.command(statement)
