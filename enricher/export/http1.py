"""One HTTP/1.1 connection that POSTs and reads the answer: the OTLP/HTTP forwarder's transport.

Why not http.client: under load its per-request work held the GIL that the pipeline needs. It
sends the head and the body in separate calls and parses the answer's headers with the email
package; py-spy put ``getresponse`` at 9 % of the enricher's GIL time (docs/PERFORMANCE.md).
Here the head and the body leave in one ``sendmsg`` and the answer is parsed by httptools
(llhttp, the parser of Node.js and uvicorn): 0.05 ms of CPU a POST against 0.12-0.15 ms.

A connection never reconnects by itself: once closed, a POST on it fails (the forwarder's
shutdown relies on that to cut a sender off).
"""

from __future__ import annotations

import http.client
import socket
import ssl

import httptools

_RECEIVE_BYTES = 64 * 1024


class Answer:
    """What the server answered: its status, headers (names in lower case) and body."""

    __slots__ = ("status", "headers", "body", "keep_alive")

    def __init__(self, status: int, headers: dict[str, str], body: bytes, keep_alive: bool) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive  # the connection can carry another request


class _Reading:
    """httptools' callbacks: collects one response, the body up to ``max_body`` bytes."""

    __slots__ = ("parser", "headers", "body", "size", "max_body", "complete", "keep_alive")

    def __init__(self, max_body: int) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.max_body = max_body
        self.complete = False
        self.keep_alive = False

    def on_message_begin(self) -> None:
        # After an interim answer (1xx) comes the real one, read afresh.
        self.headers = {}
        self.body = []
        self.size = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        if self.size <= self.max_body:
            self.body.append(body)
        self.size += len(body)

    def on_message_complete(self) -> None:
        if 100 <= self.parser.get_status_code() < 200:
            return  # interim (100 Continue, 103 Early Hints): the answer follows, as http.client reads it
        self.complete = True
        # Only known here: llhttp resets it once the message is over.
        self.keep_alive = self.parser.should_keep_alive()


class Http1Connection:
    def __init__(self, host: str, port: int, *, timeout: float, tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port = host, port
        self._timeout = timeout
        self._tls = tls
        self.sock: socket.socket | None = None
        self._closed = False

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self._timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the head and body go out at once anyway
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def post(self, head: bytes, body: bytes, max_body: int) -> Answer:
        """Send ``head`` (the request line and headers, ending in a blank line) and ``body``;
        return the answer. A body longer than ``max_body`` is cut, and the connection is then
        not kept. Raises ``http.client.RemoteDisconnected`` when the server closed the
        connection without answering, OSError when sending or receiving fails."""
        sock = self.sock
        if sock is None or self._closed:
            raise ConnectionAbortedError("the connection is closed")
        self.send(head, body)
        return self.read_answer(max_body)

    def send(self, head: bytes, body: bytes) -> None:
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket):  # TLS sockets have no sendmsg
            sock.sendall(head)
            sock.sendall(body)
            return
        sent = sock.sendmsg((head, body))
        if sent < len(head) + len(body):  # a timeout or a signal cut it short
            rest = memoryview(head + body)[sent:]
            sock.sendall(rest)

    def read_answer(self, max_body: int) -> Answer:
        sock = self.sock
        if sock is None:
            raise ConnectionAbortedError("the connection is closed")
        reading = _Reading(max_body)
        parser = reading.parser
        buffer = bytearray(_RECEIVE_BYTES)
        view = memoryview(buffer)
        received = 0
        while not reading.complete:
            count = sock.recv_into(buffer)
            if count == 0:
                if received and (_status_of(parser) or 0) >= 200:
                    break  # a body that ends with the connection (no length given)
                raise http.client.RemoteDisconnected("the server closed the connection without answering")
            received += count
            try:
                parser.feed_data(view[:count])
            except httptools.HttpParserError as error:
                raise http.client.BadStatusLine(f"an invalid HTTP answer: {error}") from None
            if reading.size > max_body:
                break  # not read to its end: this connection cannot carry another request
        reading.parser = None  # no cycle left for the garbage collector
        status = _status_of(parser)
        if status is None:  # pragma: no cover - complete implies a status line
            raise http.client.BadStatusLine("no status line")
        keep_alive = reading.complete and reading.size <= max_body and reading.keep_alive
        return Answer(status, reading.headers, b"".join(reading.body)[:max_body], keep_alive)

    def close(self) -> None:
        self._closed = True
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


def _status_of(parser: httptools.HttpResponseParser) -> int | None:
    try:
        status = parser.get_status_code()
    except Exception:
        return None
    return status or None
