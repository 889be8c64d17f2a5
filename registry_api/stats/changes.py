"""When did the stored spans last change? One cached answer shared by every live page."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class ChangeFeed:
    """The data version (see StatsStore.data_version), asked of ClickHouse at most once per
    ``min_interval`` seconds however many dashboards are open."""

    def __init__(self, read_version: Callable[[], int], *, min_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read_version
        self._min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._version: int | None = None
        self._read_at = float("-inf")

    def version(self) -> int:
        with self._lock:
            now = self._clock()
            if self._version is None or now - self._read_at >= self._min_interval:
                self._version = self._read()
                self._read_at = now
            return self._version
