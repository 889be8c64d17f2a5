"""The real `litellm` proxy CLI as a test process (used by the LiteLLM and the docs tests)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.enricher.conftest import wait_until


@contextmanager
def running_litellm_proxy(config: str | Path, port: int, *, env: dict[str, str], cwd: Path, log_path: Path,
                          ready_timeout: float = 120) -> Iterator[str]:
    """Start `litellm --config CONFIG` on 127.0.0.1:PORT, wait until it is live, yield its URL, stop it."""
    log = log_path.open("w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "litellm"), "--config", str(config),
                             "--host", "127.0.0.1", "--port", str(port)],
                            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/health/liveliness", timeout=1).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None

    try:
        assert wait_until(ready, ready_timeout) and proc.poll() is None, log_path.read_text()[-3000:]
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
