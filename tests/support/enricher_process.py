"""The enricher as a real subprocess (``python -m agentmon.cli enricher``), for failure tests.

Unlike the in-process ``Enricher`` fixture it can be killed with SIGKILL, restarted on the
same data dir and ports, and its memory read from /proc:

    with EnricherProcess(tmp_path / "data", forward=sink.endpoint, env={...}) as enricher:
        enricher.start()
        ...
        enricher.kill()      # kill -9
        enricher.start()     # same data dir, same ports: replays its journal
        enricher.rss_bytes()
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EnricherProcess:
    """One ``agentmon enricher`` process at a time, on fixed ports, logging to ``log_path``.

    ``env`` adds ``AGENTMON_*`` settings to a clean copy of this process's environment
    (every ``AGENTMON_*`` variable inherited from the caller is removed first).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        forward: str | None = None,
        env: dict[str, str] | None = None,
        grpc_port: int | None = None,
        http_port: int | None = None,
        log_path: Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.forward = forward
        self.log_path = log_path or self.data_dir.parent / "enricher.log"
        self._env = dict(env or {})
        self._extra_args = list(extra_args or [])
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self._log_file = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # ---- lifecycle ---------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> float:
        """Start (or restart) on the same data dir and ports; returns the seconds until it
        answered /healthz (its receivers are up by then)."""
        assert not self.running(), "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {key: value for key, value in os.environ.items() if not key.startswith("AGENTMON_")}
        env.update({"AGENTMON_DATA_DIR": str(self.data_dir), "AGENTMON_LOG_LEVEL": "info", **self._env})
        args = [
            sys.executable, "-m", "agentmon.cli", "enricher",
            "--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port),
        ]
        if self.forward:
            args += ["--forward-otlp", self.forward]
        args += self._extra_args
        if self._log_file is None:
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - kept open across restarts
        self._log_file.write(f"---- start {self.starts + 1} at {time.time():.3f}\n".encode())
        self._log_file.flush()
        began = time.monotonic()
        self.process = subprocess.Popen(
            args, cwd=REPO_ROOT, env=env, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.starts += 1
        deadline = began + timeout
        with httpx.Client(timeout=1.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the enricher exited with {self.process.returncode}:\n{self.log_tail()}")
                try:
                    if client.get(f"http://127.0.0.1:{self.http_port}/healthz").status_code == 200:
                        return time.monotonic() - began
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"the enricher did not start within {timeout} s:\n{self.log_tail()}")
                time.sleep(0.05)

    def kill(self) -> None:
        """kill -9: no shutdown code runs (no flush, no journal close, no commit)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (a graceful stop), then SIGKILL after ``timeout``. Returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def close(self) -> None:
        self.stop()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> EnricherProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- observing -----------------------------------------------------------------
    def rss_bytes(self) -> int:
        """Resident set size of the running process, from /proc/PID/status (VmRSS)."""
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    def metrics(self) -> dict[str, float]:
        """The Prometheus metrics as {'name{labels}': value} (best effort, empty when down)."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.http_port}/metrics", timeout=2.0).text
        except httpx.HTTPError:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def log_tail(self, lines: int = 40) -> str:
        if self._log_file is not None:
            self._log_file.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class RssSampler:
    """Samples an ``EnricherProcess``'s RSS every ``interval`` seconds in a thread:
    ``samples`` is a list of (monotonic time, bytes)."""

    def __init__(self, enricher: EnricherProcess, interval: float = 0.25) -> None:
        self._enricher = enricher
        self._interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), self._enricher.rss_bytes()))
            except (OSError, AssertionError, RuntimeError, ValueError):
                pass  # between a kill and a restart
            self._stop.wait(self._interval)

    def between(self, start: float, end: float) -> list[int]:
        return [rss for when, rss in self.samples if start <= when <= end]

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)


def migrate(registry_url: str, data_dir: Path, timeout: float = 60.0) -> None:
    """``agentmon migrate`` as a subprocess: create or upgrade the registry schema."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AGENTMON_")}
    env.update({"AGENTMON_REGISTRY_URL": registry_url, "AGENTMON_DATA_DIR": str(data_dir)})
    result = subprocess.run(
        [sys.executable, "-m", "agentmon.cli", "migrate"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"agentmon migrate failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
