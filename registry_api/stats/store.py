"""Reads per-agent usage from the traces table. Every value is a server-side query
parameter; only the (validated) database and table names are part of the SQL text."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

import clickhouse
from registry_api.stats.prices import PriceTable


def to_ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def from_ns(value: int | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(value / 1e9, tz=UTC)


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime

    def parameters(self) -> dict[str, int]:
        return {"from_ns": to_ns(self.start), "to_ns": to_ns(self.end)}


class StatsStore:
    def __init__(self, client: Client, *, database: str, table: str, prices: PriceTable) -> None:
        self._client = client
        self._database = database
        self._table = table
        self._prices = prices.as_parameters()

    def _rows(self, name: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
        sql = clickhouse.query(name, self._database, self._table)
        result = self._client.query(sql, parameters={**self._prices, **parameters})
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    def agent_stats(self, window: Window, agent_id: str = "") -> list[dict[str, Any]]:
        rows = self._rows("agent_stats", {**window.parameters(), "agent_id": agent_id})
        return [_usage(row) for row in rows]

    def timeseries(self, window: Window, agent_id: str, bucket_seconds: int) -> list[dict[str, Any]]:
        rows = self._rows(
            "agent_timeseries", {**window.parameters(), "agent_id": agent_id, "bucket_seconds": bucket_seconds}
        )
        return [
            {
                "bucket_start": from_ns(row["bucket_ns"]),
                "runs": row["runs"],
                "errors": row["failed_runs"],
                "llm_calls": row["llm_calls"],
                "input_tokens": row["input_tokens"],
                "output_tokens": row["output_tokens"],
                "cost_usd": round(row["cost_usd"], 10),
                "p95_run_duration_ms": row["p95_run_duration_ns"] / 1e6 if row["runs"] else None,
            }
            for row in rows
        ]

    def runs(self, window: Window, agent_id: str, *, status: str, limit: int, offset: int) -> tuple[list[dict], int]:
        rows = self._rows(
            "agent_runs",
            {**window.parameters(), "agent_id": agent_id, "status": status, "limit": limit, "offset": offset},
        )
        total = rows[0]["total"] if rows else self._count_runs(window, agent_id, status, offset)
        return [
            {
                "trace_id": row["trace_id"],
                "start": from_ns(row["start_ns"]),
                "duration_ms": row["duration_ns"] / 1e6,
                "status": "error" if row["failed"] else "ok",
                "llm_calls": row["llm_calls"],
                "input_tokens": row["input_tokens"],
                "output_tokens": row["output_tokens"],
                "cost_usd": round(row["cost_usd"], 10),
            }
            for row in rows
        ], total

    def _count_runs(self, window: Window, agent_id: str, status: str, offset: int) -> int:
        if offset == 0:
            return 0
        rows = self._rows(
            "agent_runs", {**window.parameters(), "agent_id": agent_id, "status": status, "limit": 1, "offset": 0}
        )
        return rows[0]["total"] if rows else 0

    def data_version(self) -> int:
        """Changes whenever spans are written (see queries/data_version.sql)."""
        rows = self._rows("data_version", {"database_name": self._database, "table_name": self._table})
        return int(rows[0]["version"] or 0) if rows else 0

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        rows = self._rows("trace_spans", {"trace_id": trace_id})
        for row in rows:
            row["start"] = from_ns(row.pop("start_ns"))
            row["duration_ms"] = row.pop("duration_ns") / 1e6
            row["cost_usd"] = round(row["cost_usd"], 10)
            row["is_run"] = bool(row["is_run"])
            row["is_llm"] = bool(row["is_llm"])
        return rows


def _usage(row: dict[str, Any]) -> dict[str, Any]:
    runs = row["runs"]
    p50, p95, p99 = row["run_duration_ns"] if runs else (None, None, None)
    return {
        "agent_id": row["agent_id"],
        "runs": runs,
        "llm_calls": row["llm_calls"],
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "cost_usd": round(row["cost_usd"], 10),
        "errors": row["failed_runs"],
        "error_rate": row["failed_runs"] / runs if runs else 0.0,
        "p50_run_duration_ms": p50 / 1e6 if p50 is not None else None,
        "p95_run_duration_ms": p95 / 1e6 if p95 is not None else None,
        "p99_run_duration_ms": p99 / 1e6 if p99 is not None else None,
        "last_seen": from_ns(row["last_seen_ns"]),
    }
