"""A real OTLP/HTTP trace receiver for tests (POST /v1/traces, binary protobuf).

The same recording and misbehaviour as OtlpTestSink (fail_with, reject_spans, pause, stop and
start on the same port), served over HTTP/1.1 with keep-alive. gRPC status codes given to
fail_with are answered with the HTTP status the collector's OTLP receiver uses for them, and a
retry_delay becomes a Retry-After header (whole seconds, as HTTP allows).

    with OtlpHttpTestSink() as sink:
        forwarder = OtlpHttpForwarder(sink.endpoint, ...)
"""

from __future__ import annotations

import gzip
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.otlp_sink import OtlpTestSink

# After the collector's otlpreceiver (internal/errors): gRPC code -> HTTP status.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class OtlpHttpTestSink(OtlpTestSink):
    """OTLP/HTTP on 127.0.0.1. ``endpoint`` is ``127.0.0.1:PORT`` (the forwarder adds /v1/traces).

    ``content_encodings`` lists each request's Content-Encoding (``""`` for none), so a test can
    see that a client compresses."""

    def __init__(self, port: int = 0, **kw: object) -> None:
        self._http: ThreadingHTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        self._sockets_lock = threading.Lock()
        self.content_encodings: list[str] = []
        self.connections_opened = 0  # a kept-alive client opens one per sender
        super().__init__(port, **kw)  # type: ignore[arg-type]

    @property
    def running(self) -> bool:
        return self._http is not None

    def start(self) -> OtlpHttpTestSink:
        if self._http is not None:
            return self
        server = _Server(("127.0.0.1", self._port), _handler_for(self))
        self._port = server.server_address[1]
        self._http = server
        self._serve_thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                              name="otlp-http-test-sink", daemon=True)
        self._serve_thread.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        """Stop serving and cut open connections (a crashing collector); start() brings it back."""
        server, self._http = self._http, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._sockets_lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._open.set()

    def _track(self, sock: socket.socket, open_: bool) -> None:
        with self._sockets_lock:
            (self._sockets.add if open_ else self._sockets.discard)(sock)
            self.connections_opened += open_


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that went away (a forwarder that timed out or shut down) is part of the
        # tests, not an error worth a traceback on stderr.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(sink: OtlpHttpTestSink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the collector

        def setup(self) -> None:
            super().setup()
            sink._track(self.connection, True)
            self.server_of_this_connection = sink._http

        def finish(self) -> None:
            sink._track(self.connection, False)
            super().finish()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet tests
            pass

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/v1/traces":
                return self._reply(404, b"not found", "text/plain")
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                if not sink._accept_gzip:
                    return self._reply(415, b"gzip not accepted", "text/plain")
                body = gzip.decompress(body)
            if len(body) > sink._max_receive_bytes:
                return self._reply(413, b"request too large", "text/plain")
            try:
                request = ExportTraceServiceRequest.FromString(body)
            except Exception:
                return self._reply(400, b"not an ExportTraceServiceRequest", "text/plain")
            with sink._cond:
                sink.content_encodings.append(encoding)
            server = self.server_of_this_connection
            answer = sink._answer(request, lambda: sink._http is server and server is not None)
            if sink._http is not server:
                self.close_connection = True  # stopped while held: no answer, like a crash
                return None
            if not isinstance(answer, tuple):
                return self._reply(200, answer.SerializeToString(), "application/x-protobuf")
            code, message, retry_delay = answer
            status = status_pb2.Status(code=code.value[0], message=message).SerializeToString()
            headers = {"Retry-After": str(max(0, round(retry_delay)))} if retry_delay is not None else {}
            return self._reply(HTTP_STATUS.get(code, 500), status, "application/x-protobuf", headers)

        def _reply(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler
