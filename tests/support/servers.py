"""Serve an ASGI app (FastAPI) for real on 127.0.0.1, on a free port, in a thread.

    with ServedApp(app) as server:
        httpx.get(server.url + "/path")
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


class ServedApp:
    def __init__(self, app, *, start_timeout: float = 20.0) -> None:
        self.server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=1, lifespan="on"))
        self._thread = threading.Thread(target=self.server.run, name="served-app", daemon=True)
        self._start_timeout = start_timeout
        self.url = ""
        self.port = 0

    def __enter__(self) -> ServedApp:
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *_) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
