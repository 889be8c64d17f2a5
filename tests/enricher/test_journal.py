"""The ingest journal, on real files: order, blocking reads, budget, commits, recovery, crashes."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from enricher.journal import RECORD_HEADER_BYTES, Journal, JournalFull

REPO_ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


def frame(record: bytes) -> int:
    return RECORD_HEADER_BYTES + len(record)


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def read_all(journal: Journal, batch: int = 1000) -> list[tuple[int, bytes]]:
    """Everything readable now (timeout 0 never blocks)."""
    records: list[tuple[int, bytes]] = []
    while chunk := journal.read(batch, timeout=0):
        records.extend(chunk)
    return records


@pytest.fixture
def opened():
    """Opens journals and closes whatever a test left open, so a failing test leaks no threads."""
    journals: list[Journal] = []

    def open_journal(directory: Path, **kwargs) -> Journal:
        journal = Journal(directory, **{"max_bytes": 16 * MiB, **kwargs})
        journals.append(journal)
        return journal

    yield open_journal
    for journal in journals:
        journal.close()


def test_appends_get_consecutive_seqs_and_are_read_in_order(tmp_path: Path, opened) -> None:
    journal = opened(tmp_path / "j")
    records = [f"record {i}".encode() * (i + 1) for i in range(50)]
    assert [journal.append(r) for r in records] == list(range(50))
    assert journal.pending_records == 50
    assert journal.pending_bytes == sum(frame(r) for r in records)
    assert journal.last_committed == -1

    first = journal.read(20, timeout=1)
    rest = journal.read(1000, timeout=1)
    assert first + rest == list(enumerate(records))
    assert len(first) == 20
    assert journal.read(10, timeout=0) == []  # everything was read once


def test_read_waits_for_an_append_from_another_thread(tmp_path: Path, opened) -> None:
    journal = opened(tmp_path / "j")
    appender = threading.Timer(0.2, journal.append, args=(b"late",))
    started = time.monotonic()
    appender.start()
    try:
        assert journal.read(10, timeout=10) == [(0, b"late")]
    finally:
        appender.join()
    assert 0.1 < time.monotonic() - started < 5


def test_read_times_out_empty_and_close_wakes_a_blocked_read(tmp_path: Path, opened) -> None:
    journal = opened(tmp_path / "j")
    started = time.monotonic()
    assert journal.read(10, timeout=0.1) == []
    assert time.monotonic() - started >= 0.09

    result: list[list[tuple[int, bytes]]] = []
    reader = threading.Thread(target=lambda: result.append(journal.read(10, timeout=30)))
    reader.start()
    time.sleep(0.1)
    journal.close()
    reader.join(timeout=5)
    assert not reader.is_alive() and result == [[]]
    with pytest.raises(RuntimeError):
        journal.append(b"after close")


def test_over_budget_raises_journal_full_and_keeps_what_it_has(tmp_path: Path, opened) -> None:
    record = b"x" * 1000
    journal = opened(tmp_path / "j", max_bytes=5 * frame(record))
    for _ in range(5):  # exactly the budget fits
        journal.append(record)
    with pytest.raises(JournalFull):
        journal.append(record)
    with pytest.raises(JournalFull):
        journal.append(b"")  # even a header-only frame
    assert journal.pending_records == 5 and journal.pending_bytes == 5 * frame(record)
    assert [seq for seq, _ in read_all(journal)] == [0, 1, 2, 3, 4]  # the refusals took no seq


def test_a_record_bigger_than_the_whole_budget_is_a_value_error(tmp_path: Path, opened) -> None:
    journal = opened(tmp_path / "j", max_bytes=4096)
    with pytest.raises(ValueError):
        journal.append(b"x" * 4096)  # plus its header, it can never fit: retrying is pointless
    assert journal.append(b"x" * (4096 - RECORD_HEADER_BYTES)) == 0


def test_commit_deletes_fully_committed_segments_and_frees_the_budget(tmp_path: Path, opened) -> None:
    directory = tmp_path / "j"
    record = b"r" * 1000
    # ~4 records per segment, room for 40 pending records.
    journal = opened(directory, max_bytes=40 * frame(record), segment_bytes=4 * frame(record))
    for _ in range(40):
        journal.append(record)
    with pytest.raises(JournalFull):
        journal.append(record)
    assert len(segment_files(directory)) == 10

    records = read_all(journal)
    assert len(records) == 40
    journal.commit(21)  # segments 0-3, 4-7, ..., 16-19 are done; 20-23 is not
    assert journal.last_committed == 21
    assert journal.pending_records == 18 and journal.pending_bytes == 18 * frame(record)
    assert [p.name for p in segment_files(directory)][0] == f"{20:020d}.seg"
    assert len(segment_files(directory)) == 5

    for _ in range(22):  # the budget is back
        journal.append(record)
    with pytest.raises(JournalFull):
        journal.append(record)

    journal.commit(21)  # again, or lower: nothing to do
    journal.commit(3)
    assert journal.last_committed == 21
    with pytest.raises(ValueError):
        journal.commit(62)  # never appended
    journal.commit(61)
    assert journal.pending_records == 0 and journal.pending_bytes == 0
    assert len(segment_files(directory)) == 1  # the active segment stays


def test_read_skips_records_committed_before_they_were_read(tmp_path: Path, opened) -> None:
    # The pipeline tracks new appends itself and commits them without reading them back.
    journal = opened(tmp_path / "j", segment_bytes=300)
    for i in range(20):
        journal.append(b"%d" % i * 40)
    journal.commit(12)
    assert journal.read(3, timeout=0) == [(13, b"13" * 40), (14, b"14" * 40), (15, b"15" * 40)]
    journal.commit(17)
    assert [seq for seq, _ in read_all(journal)] == [18, 19]


def test_reopen_replays_exactly_the_uncommitted_records_and_numbering_goes_on(tmp_path: Path, opened) -> None:
    directory = tmp_path / "j"
    journal = opened(directory, segment_bytes=500)
    records = [os.urandom(100) for _ in range(30)]
    for record in records:
        journal.append(record)
    read_all(journal)
    journal.commit(11)
    journal.close()

    journal = opened(directory, segment_bytes=500)
    assert journal.last_committed == 11
    assert journal.pending_records == 18
    assert journal.pending_bytes == sum(frame(r) for r in records[12:])
    assert read_all(journal) == [(seq, records[seq]) for seq in range(12, 30)]
    assert journal.append(b"new") == 30
    assert journal.read(10, timeout=1) == [(30, b"new")]
    journal.commit(30)
    journal.close()

    journal = opened(directory, segment_bytes=500)
    assert journal.last_committed == 30 and journal.pending_records == 0
    assert read_all(journal) == []
    assert journal.append(b"newer") == 31


def test_a_record_cut_in_the_middle_is_dropped_on_recovery(tmp_path: Path, opened) -> None:
    directory = tmp_path / "j"
    journal = opened(directory)
    for i in range(10):
        journal.append(b"%d" % i * 100)
    journal.close()
    last = segment_files(directory)[-1]
    os.truncate(last, last.stat().st_size - 50)  # the 10th record loses its end

    journal = opened(directory)
    assert read_all(journal) == [(i, b"%d" % i * 100) for i in range(9)]
    assert journal.append(b"after") == 9  # written where the torn record was
    journal.close()
    assert [seq for seq, _ in read_all(opened(directory))] == list(range(10))


def test_a_flipped_byte_in_the_last_record_is_dropped_on_recovery(tmp_path: Path, opened) -> None:
    directory = tmp_path / "j"
    journal = opened(directory)
    for i in range(10):
        journal.append(b"%d" % i * 100)
    journal.close()
    last = segment_files(directory)[-1]
    data = bytearray(last.read_bytes())
    data[-7] ^= 0x40
    last.write_bytes(bytes(data))

    journal = opened(directory)
    assert read_all(journal) == [(i, b"%d" % i * 100) for i in range(9)]
    assert journal.pending_records == 9
    assert journal.pending_bytes == 9 * (RECORD_HEADER_BYTES + 100)


def test_a_zero_filled_tail_is_not_taken_for_empty_records(tmp_path: Path, opened) -> None:
    # After a power cut some file systems show the new file size with zeros for the data.
    directory = tmp_path / "j"
    journal = opened(directory)
    journal.append(b"kept")
    journal.close()
    with open(segment_files(directory)[-1], "ab") as file:
        file.write(bytes(4096))

    journal = opened(directory)
    assert read_all(journal) == [(0, b"kept")]
    assert journal.append(b"") == 1  # empty records are fine when really written
    assert journal.read(5, timeout=1) == [(1, b"")]


def test_a_commit_that_died_before_deleting_segments_is_finished_by_recovery(tmp_path: Path, opened) -> None:
    directory = tmp_path / "j"
    journal = opened(directory, segment_bytes=250)
    for i in range(20):
        journal.append(b"%02d" % i * 50)
    journal.close()
    before = len(segment_files(directory))
    (directory / "committed").write_text("9\n")  # the cursor was renamed, then the process died

    journal = opened(directory, segment_bytes=250)
    assert journal.last_committed == 9
    assert [seq for seq, _ in read_all(journal)] == list(range(10, 20))
    assert len(segment_files(directory)) < before
    assert int(segment_files(directory)[0].stem) <= 10


def test_a_lost_cursor_replays_from_the_oldest_segment(tmp_path: Path, opened) -> None:
    directory = tmp_path / "j"
    journal = opened(directory, segment_bytes=250)
    for i in range(20):
        journal.append(b"%02d" % i * 50)
    read_all(journal)
    journal.commit(10)
    journal.close()
    oldest = int(segment_files(directory)[0].stem)
    (directory / "committed").unlink()

    journal = opened(directory, segment_bytes=250)
    assert journal.last_committed == oldest - 1 == 9
    assert [seq for seq, _ in read_all(journal)] == list(range(oldest, 20))  # replays 10 again, loses nothing


def test_a_second_open_of_the_same_journal_is_refused(tmp_path: Path, opened) -> None:
    journal = opened(tmp_path / "j")
    with pytest.raises(RuntimeError, match="already open"):
        Journal(tmp_path / "j", max_bytes=MiB)
    journal.close()
    opened(tmp_path / "j").close()  # closing releases it


def test_fsync_on_every_append_mode(tmp_path: Path, opened) -> None:
    journal = opened(tmp_path / "j", fsync_interval=0, segment_bytes=100)
    for i in range(5):
        journal.append(b"%d" % i * 60)
    journal.close()
    assert [seq for seq, _ in read_all(opened(tmp_path / "j"))] == list(range(5))


CRASHING_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from enricher.journal import Journal

    # No fsync in this process's lifetime: the page cache alone must carry the data.
    journal = Journal(Path(sys.argv[2]), max_bytes=64 * 1024 * 1024, segment_bytes=256 * 1024, fsync_interval=3600)
    count = int(sys.argv[3])
    for i in range(count):
        assert journal.append(b"%d:" % i + bytes([i % 251]) * 1000) == i
    journal.commit(int(sys.argv[4]))
    print("appended", flush=True)
    time.sleep(60)  # killed long before this ends; close() never runs
    """
)


def test_records_survive_sigkill_without_close(tmp_path: Path, opened) -> None:
    directory = tmp_path / "j"
    count, committed = 1500, 99
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_WRITER, str(REPO_ROOT), str(directory), str(count), str(committed)],
        stdout=subprocess.PIPE,
    )
    try:
        ready, _, _ = select.select([child.stdout], [], [], 60)
        assert ready, "the writer did not finish appending in time"
        assert child.stdout.readline() == b"appended\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    journal = opened(directory)
    assert journal.last_committed == committed
    records = read_all(journal)
    assert [seq for seq, _ in records] == list(range(committed + 1, count))
    assert all(payload == b"%d:" % seq + bytes([seq % 251]) * 1000 for seq, payload in records)
    assert journal.append(b"next") == count


def test_concurrent_appenders_and_a_committing_reader(tmp_path: Path, opened) -> None:
    journal = opened(tmp_path / "j", segment_bytes=16 * 1024)  # many rotations under contention
    threads, per_thread = 4, 2000
    appended: dict[int, bytes] = {}
    appended_lock = threading.Lock()

    def append_many(thread: int) -> None:
        for i in range(per_thread):
            record = b"%d/%d" % (thread, i)
            seq = journal.append(record)
            with appended_lock:
                appended[seq] = record

    seen: list[tuple[int, bytes]] = []
    done = threading.Event()

    def consume() -> None:
        give_up = time.monotonic() + 60
        while (not done.is_set() or journal.pending_records) and time.monotonic() < give_up:
            batch = journal.read(500, timeout=0.05)
            if batch:
                seen.extend(batch)
                journal.commit(batch[-1][0])

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    appenders = [threading.Thread(target=append_many, args=(t,)) for t in range(threads)]
    for appender in appenders:
        appender.start()
    for appender in appenders:
        appender.join(timeout=60)
    done.set()
    consumer.join(timeout=60)
    assert not consumer.is_alive()

    total = threads * per_thread
    assert [seq for seq, _ in seen] == list(range(total))  # each exactly once, in order
    assert dict(seen) == appended
    for thread in range(threads):  # and each thread's records in its own order
        mine = [int(p.split(b"/")[1]) for _, p in seen if p.startswith(b"%d/" % thread)]
        assert mine == list(range(per_thread))
    assert journal.pending_records == 0 and journal.pending_bytes == 0
    assert len(segment_files(tmp_path / "j")) == 1
