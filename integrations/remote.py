"""What the flow-server integrations (Langflow, Flowise) share: their errors, and one
HTTP call to the flow server that carries the W3C trace context and turns every way it
can fail into a clear exception."""

from __future__ import annotations

from typing import Any

import httpx
from opentelemetry import propagate
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_W3C = TraceContextTextMapPropagator()


class FlowRunError(RuntimeError):
    """A flow server call failed: refused, timed out, unreachable, or answered something unexpected.

    ``status_code`` is the HTTP status when the server answered with an error, ``detail`` its message."""

    def __init__(self, message: str, *, status_code: int | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class FlowAuthError(FlowRunError):
    """The flow server refused the API key (401 or 403)."""


class FlowTimeoutError(FlowRunError):
    """The flow server did not answer within the timeout."""


class FlowReplyError(FlowRunError):
    """The flow server answered 2xx with a body this client cannot read (not JSON, or no output)."""


def trace_context_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``, baggage) of the current span, so that a flow
    server that traces continues the caller's trace. The W3C header is always sent, even
    when the application configured other propagators."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if "traceparent" not in carrier:
        _W3C.inject(carrier)
    return carrier


def error_detail(response: httpx.Response) -> str:
    """The server's own words about an error reply (FastAPI ``detail``, Flowise ``message``...)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "message", "error", "msg"):
            value = body.get(key)
            if value:
                return value if isinstance(value, str) else str(value)[:300]
    return str(body)[:300]


def call_json(http: httpx.Client, method: str, path: str, *, what: str, propagate_trace: bool = True,
              headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """``method path`` on the flow server, its JSON reply on success. ``what`` names the call
    in error messages ("Langflow run of flow X")."""
    all_headers = {**(headers or {}), **(trace_context_headers() if propagate_trace else {})}
    try:
        response = http.request(method, path, headers=all_headers, **kwargs)
    except httpx.TimeoutException as error:
        raise FlowTimeoutError(
            f"{what} timed out: {http.base_url} did not answer within {_seconds(http.timeout)} s ({type(error).__name__})"
        ) from error
    except httpx.HTTPError as error:
        raise FlowRunError(f"{what} failed: {http.base_url} is unreachable ({error or type(error).__name__})") from error
    if response.status_code in (401, 403):
        detail = error_detail(response)
        raise FlowAuthError(
            f"{what} was refused with {response.status_code}: {detail} (check the API key)",
            status_code=response.status_code, detail=detail,
        )
    if response.status_code >= 400:
        detail = error_detail(response)
        raise FlowRunError(f"{what} failed with {response.status_code}: {detail}",
                           status_code=response.status_code, detail=detail)
    try:
        return response.json()
    except ValueError as error:
        snippet = response.text.strip()[:120]
        raise FlowReplyError(f"{what} answered {response.status_code} with a body that is not JSON: {snippet!r}",
                             status_code=response.status_code) from error


def mark_failure(span: Span, error: FlowRunError) -> None:
    """Attributes that say how a run failed; agent_run sets the ERROR status and records the exception."""
    span.set_attribute("error.type", type(error).__name__)
    if error.status_code is not None:
        span.set_attribute("http.response.status_code", error.status_code)


def _seconds(timeout: httpx.Timeout) -> str:
    value = timeout.read if timeout.read is not None else timeout.connect
    return "unlimited" if value is None else f"{value:g}"


def server_attributes(base_url: httpx.URL) -> dict[str, Any]:
    attributes: dict[str, Any] = {"server.address": base_url.host}
    if base_url.port is not None:
        attributes["server.port"] = base_url.port
    return attributes
