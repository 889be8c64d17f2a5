"""OTLP/HTTP receiver: POST /v1/traces (protobuf or JSON, gzip), plus /metrics and /healthz.

Errors follow the OTLP/HTTP spec: a google.rpc.Status body in the request's encoding
(JSON for JSON requests and anything unrecognised), 400 for bad payloads, 413 for too
large, 415 for other content types, 429 with Retry-After when the pipeline is full.
"""

from __future__ import annotations

import json
import zlib

from google.rpc import code_pb2, status_pb2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from enricher.metrics import EnricherMetrics
from enricher.pipeline import Overloaded, Pipeline
from enricher.receive.decode import InvalidPayload, decode_json

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class PayloadTooLarge(Exception):
    pass


def create_otlp_http_app(pipeline: Pipeline, metrics: EnricherMetrics, *, max_request_bytes: int) -> Starlette:
    async def export_traces(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        as_json = content_type != PROTOBUF
        if content_type not in (PROTOBUF, JSON):
            metrics.requests.labels("http", "invalid").inc()
            return _error(415, code_pb2.INVALID_ARGUMENT, f"unsupported content type {content_type!r}; "
                          f"use {PROTOBUF} or {JSON}", as_json=True)
        try:
            body = await _read_body(request, request.headers.get("content-encoding", ""), max_request_bytes)
            if as_json:
                scanned = pipeline.scanner.scan_request(decode_json(body))
            else:
                scanned = pipeline.scanner.scan(body)
            # Journal I/O and a lock: keep them off the event loop.
            await run_in_threadpool(pipeline.submit, scanned)
        except PayloadTooLarge:
            metrics.requests.labels("http", "too_large").inc()
            return _error(413, code_pb2.INVALID_ARGUMENT, f"request larger than {max_request_bytes} bytes", as_json=as_json)
        except InvalidPayload as error:
            metrics.requests.labels("http", "invalid").inc()
            return _error(400, code_pb2.INVALID_ARGUMENT, str(error), as_json=as_json)
        except Overloaded as error:
            metrics.requests.labels("http", "overloaded").inc()
            return _error(
                429, code_pb2.RESOURCE_EXHAUSTED, f"{error}; retry later", as_json=as_json,
                headers={"Retry-After": str(max(1, int(error.retry_after)))},
            )
        except ClientDisconnect:
            return Response(status_code=400)
        metrics.requests.labels("http", "ok").inc()
        # An empty ExportTraceServiceResponse: full success.
        return Response(b"{}" if as_json else b"", media_type=JSON if as_json else PROTOBUF)

    async def prometheus_metrics(_: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def healthz(_: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    return Starlette(
        routes=[
            Route("/v1/traces", export_traces, methods=["POST"]),
            Route("/metrics", prometheus_metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


async def _read_body(request: Request, encoding: str, limit: int) -> bytes:
    """The body, decompressed, never holding more than ``limit`` bytes of it."""
    encoding = encoding.strip().lower()
    if encoding not in ("", "identity", "gzip", "deflate"):
        raise InvalidPayload(f"unsupported content encoding {encoding!r}; use gzip or none")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise PayloadTooLarge
    if encoding in ("", "identity"):
        return bytes(raw)
    return _decompress(raw, encoding, limit)


_MAX_GZIP_MEMBERS = 1024
_INFLATE_CHUNK = 64 * 1024


def _decompress(raw: bytearray, encoding: str, limit: int) -> bytes:
    """Inflate a gzip (RFC 1952, possibly several members, as Go's reader allows) or zlib body.

    max_length bounds a decompression bomb; the input is fed in chunks so that the copy zlib
    makes of the bytes after each member stays small however many members there are.
    """
    view = memoryview(raw)
    body = bytearray()
    position = members = 0
    while members == 0 or position < len(view):
        members += 1
        if members > _MAX_GZIP_MEMBERS:
            raise InvalidPayload(f"the gzip body has more than {_MAX_GZIP_MEMBERS} members")
        if members > 1 and encoding != "gzip":
            raise InvalidPayload(f"the {encoding} body has data after its end")
        # wbits 47 = gzip or zlib header, auto-detected.
        decompressor = zlib.decompressobj(47 if encoding == "gzip" else 15)
        while not decompressor.eof:
            if position >= len(view):
                raise InvalidPayload(f"the {encoding} body is truncated")
            chunk = view[position : position + _INFLATE_CHUNK]
            position += len(chunk)
            try:
                body += decompressor.decompress(chunk, limit + 1 - len(body))
            except zlib.error as error:
                raise InvalidPayload(f"body is not valid {encoding}: {error}") from None
            if len(body) > limit or decompressor.unconsumed_tail:
                raise PayloadTooLarge
        position -= len(decompressor.unused_data)
    return bytes(body)


def _error(status: int, code: int, message: str, *, as_json: bool, headers: dict[str, str] | None = None) -> Response:
    if as_json:
        return Response(json.dumps({"code": code, "message": message}), status_code=status,
                        media_type=JSON, headers=headers)
    body = status_pb2.Status(code=code, message=message).SerializeToString()
    return Response(body, status_code=status, media_type=PROTOBUF, headers=headers)
