"""ChangeFeed: one ClickHouse read per interval, however many live pages ask."""

from __future__ import annotations

import threading

from registry_api.stats.changes import ChangeFeed


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_reads_at_most_once_per_interval_and_sees_changes() -> None:
    reads, clock = [], Clock()
    versions = iter([10, 10, 25])

    def read() -> int:
        reads.append(clock.now)
        return next(versions)

    feed = ChangeFeed(read, min_interval=1.0, clock=clock)
    assert [feed.version() for _ in range(5)] == [10] * 5
    clock.now = 0.99
    assert feed.version() == 10 and reads == [0.0]
    clock.now = 1.0
    assert feed.version() == 10 and reads == [0.0, 1.0]
    clock.now = 2.5
    assert feed.version() == 25 and len(reads) == 3


def test_a_failed_read_is_raised_until_the_next_interval_then_retried() -> None:
    calls, clock = [], Clock()

    def read() -> int:
        calls.append(clock.now)
        if len(calls) == 1:
            raise ConnectionError("ClickHouse down")
        return 7

    feed = ChangeFeed(read, min_interval=1.0, clock=clock)
    for _ in range(3):  # an outage is not polled harder than the data
        try:
            feed.version()
        except ConnectionError:
            pass
        else:
            raise AssertionError("the error must reach the caller")
    assert calls == [0.0]
    clock.now = 1.0
    assert feed.version() == 7 and calls == [0.0, 1.0]


def test_concurrent_callers_share_one_read() -> None:
    reads = []
    feed = ChangeFeed(lambda: reads.append(1) or 3, min_interval=60)
    threads = [threading.Thread(target=feed.version) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(reads) == 1
