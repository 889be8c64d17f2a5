from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from registry_api.store import AgentIdentity, AgentStore, LastUsedRecorder, create_registry_engine


class CountingStore(AgentStore):
    def __init__(self, engine: sa.Engine) -> None:
        super().__init__(engine)
        self.batches: list[int] = []

    def record_last_used(self, last_used) -> None:  # type: ignore[override]
        self.batches.append(len(last_used))
        super().record_last_used(last_used)


def test_many_marks_become_one_batched_write(store: AgentStore) -> None:
    counting = CountingStore(store.engine)
    a, _ = store.resolve_or_create(AgentIdentity(name="a"))
    b, _ = store.resolve_or_create(AgentIdentity(name="b"))
    recorder = LastUsedRecorder(counting, interval_seconds=60)
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    for i in range(1000):
        recorder.mark_used(a.id, t0 + timedelta(seconds=i % 50))
    recorder.mark_used(b.id, t0)
    assert store.get(a.id).last_used_at is None  # nothing written until a flush
    recorder.flush()
    assert counting.batches == [2]
    assert store.get(a.id).last_used_at == t0 + timedelta(seconds=49)
    assert store.get(b.id).last_used_at == t0


def test_background_thread_flushes_and_shutdown_writes_the_rest(store: AgentStore) -> None:
    a, _ = store.resolve_or_create(AgentIdentity(name="a"))
    recorder = LastUsedRecorder(store, interval_seconds=0.05)
    recorder.start()
    recorder.mark_used(a.id)
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while store.get(a.id).last_used_at is None and datetime.now(UTC) < deadline:
        time.sleep(0.02)
    assert store.get(a.id).last_used_at is not None
    recorder.shutdown()


def test_a_failed_flush_keeps_the_times_for_the_next_one(tmp_path) -> None:
    broken = AgentStore(create_registry_engine(f"sqlite:///{tmp_path / 'no-schema.db'}"))
    recorder = LastUsedRecorder(broken, interval_seconds=60)
    recorder.mark_used("some-agent", datetime(2026, 1, 1, tzinfo=UTC))
    assert recorder.flush() is False  # no agents table: the write fails
    assert recorder.pending() == {"some-agent": datetime(2026, 1, 1, tzinfo=UTC)}
