"""The narrow interface between the pipeline and its sinks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class ExportBatch:
    """Spans ready to leave agentmon.

    ``payload`` is a serialized ``ExportTraceServiceRequest``. Serialized requests can be
    concatenated into one valid request (protobuf merges repeated fields), so sinks may
    coalesce batches without decoding them.

    ``on_done(delivered)`` is called exactly once, from any thread: ``True`` when the
    downstream acknowledged the spans, ``False`` when it rejected them permanently (they
    are counted as failed; retrying would not help). Only then may the pipeline forget them.
    """

    payload: bytes
    span_count: int
    on_done: Callable[[bool], None]


class SpanSink(Protocol):
    name: str

    def submit(self, batch: ExportBatch, timeout: float | None = None) -> bool:
        """Queue ``batch`` for delivery; blocks while the sink's bounded queue is full.

        Returns False if it is still full after ``timeout`` seconds (``None``: wait forever)
        or the sink is shut down; the caller keeps the batch and pushes back upstream."""
        ...

    def force_flush(self, timeout: float) -> bool:
        """Wait until everything submitted so far is done; False on timeout."""
        ...

    def shutdown(self, timeout: float) -> None:
        """Stop accepting, try to deliver what is queued within ``timeout``, release resources."""
        ...
