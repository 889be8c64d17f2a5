"""The ingest journal: OTLP requests are on disk before the client is acknowledged.

Receivers ``append`` the raw request bytes and answer the client only afterwards, so a
``kill -9`` loses no acknowledged span: the data is in the OS page cache when ``append``
returns, and the page cache survives the death of the process. Against power loss the
journal fsyncs at most every ``fsync_interval`` seconds (and on ``close``), so a power cut
can lose up to that much. After a restart every record not yet committed is read again:
delivery is at-least-once.

On disk, in ``directory``:

* ``<first seq, 20 digits>.seg`` -- segment files, each named by the sequence number of
  its first record. A record is framed as ``length: u32 LE, crc32: u32 LE, bytes``; the
  CRC covers the length too, so a zero-filled tail (what some file systems leave after a
  power cut) is not mistaken for empty records. A new segment is started when the current
  one would grow past ``segment_bytes``.
* ``committed`` -- the commit cursor, the highest sequence number fully delivered, written
  with write + rename so it is always either the old or the new value. It is not fsynced
  on every commit: a cursor that goes back in time after a power cut only replays records
  again, which at-least-once allows.
* ``lock`` -- held (flock) while the journal is open, so two processes never write one
  journal.

Byte budget: ``pending_bytes`` counts the frames (record + ``RECORD_HEADER_BYTES``) of
records appended and not yet committed; ``append`` raises ``JournalFull`` rather than go
past ``max_bytes``, and ``commit`` gives the bytes back at once. Disk space comes back
only when a whole segment is committed, so the files can hold up to one segment more than
the budget; segments are therefore kept to at most a quarter of ``max_bytes``.

A record larger than the whole budget can never be stored: ``append`` raises
``ValueError`` for it (not ``JournalFull``, because retrying would never succeed).

Sequence numbers are monotonic across restarts. They normally have no holes; the only
exception is a segment found corrupt in its middle at recovery (disk damage, not a crash):
its records from the damage on are lost and ``read`` skips their numbers.
"""

from __future__ import annotations

import bisect
import errno
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from array import array
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

_FRAME_HEADER = struct.Struct("<II")  # length, crc32
_LENGTH = struct.Struct("<I")
RECORD_HEADER_BYTES = _FRAME_HEADER.size
_MAX_RECORD_BYTES = 0xFFFFFFFF  # what the u32 length can express

_SEGMENT_SUFFIX = ".seg"
_CURSOR_NAME = "committed"
_CURSOR_TMP_NAME = "committed.tmp"
_LOCK_NAME = "lock"

_APPEND_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
# Data and file size are what a segment needs to survive a power cut; fdatasync skips
# the timestamps (and falls back to fsync where it does not exist).
_sync_data = getattr(os, "fdatasync", os.fsync)


class JournalFull(Exception):
    """The append was refused: the byte budget (or the disk) is used up. Retry later."""


def _checksum(record: bytes, size: int) -> int:
    return zlib.crc32(record, zlib.crc32(_LENGTH.pack(size)))


def _segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{_SEGMENT_SUFFIX}"


def _pread_exact(fd: int, size: int, offset: int) -> bytes:
    """Read ``size`` bytes at ``offset``; fewer only at the end of the file."""
    data = os.pread(fd, size, offset)
    if len(data) == size or not data:
        return data
    # Regular files return short reads only at EOF or for huge sizes (Linux caps one read
    # near 2 GiB); keep going so that both cases end up right.
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """An append-only, segmented, crash-safe record log with a commit cursor.

    Thread safety: any number of threads may ``append`` and ``commit``; ``read`` is meant
    for a single consumer (concurrent calls are serialized, not an error).
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int = 64 * 1024 * 1024,
        fsync_interval: float = 1.0,
    ) -> None:
        """Open (creating if needed) the journal in ``directory`` and recover it.

        Recovery drops a torn or corrupt tail (short record or bad CRC), deletes segments
        that are fully committed and positions ``read`` at the first uncommitted record.
        ``fsync_interval`` 0 fsyncs on every append (slow; for the paranoid and for tests).
        """
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if segment_bytes <= 0:
            raise ValueError("segment_bytes must be positive")
        if fsync_interval < 0:
            raise ValueError("fsync_interval must be >= 0")
        self._directory = Path(directory)
        self._max_bytes = max_bytes
        # Disk is freed a whole segment at a time; small segments keep the files near the budget.
        self._segment_bytes = min(segment_bytes, max(max_bytes // 4, 1))
        self._fsync_interval = fsync_interval

        # Writer state (and everything shared with the reader and committers): under _lock.
        self._lock = threading.Lock()
        self._records_available = threading.Condition(self._lock)
        self._closed = False
        self._segments: list[int] = []  # first seq of each segment file, ascending; the last is active
        self._active_fd = -1
        self._active_size = 0
        self._rotate_before_next_append = False
        self._next_seq = 0
        self._committed = -1
        # Byte counters since this open; pending_bytes = appended - committed.
        self._appended_bytes = 0
        self._committed_bytes = 0
        # _record_ends[seq - _ends_first_seq] = _appended_bytes right after record seq was
        # appended, so that a commit knows how many bytes it frees in O(1).
        self._record_ends = array("q")
        self._ends_first_seq = 0
        self._reader_waiting = False
        self._unsynced = False  # the active segment has writes not yet fsynced
        self._directory_unsynced = False  # segment files created since the last directory fsync
        self._retired_fds: list[int] = []  # full segments whose final fsync + close is still due

        # Reader state: under _read_lock (one consumer).
        self._read_lock = threading.Lock()
        self._read_seq = 0  # the next seq read() hands out
        self._read_fd = -1
        self._read_segment_first = -1
        self._read_offset = 0
        self._read_position_seq = 0  # seq of the record at _read_offset

        self._commit_lock = threading.Lock()  # one cursor write + segment deletion at a time

        self._directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._take_directory_lock()
        try:
            self._recover()
        except BaseException:
            self._lock_file.close()
            raise

        self._stop_flusher = threading.Event()
        self._flusher: threading.Thread | None = None
        if fsync_interval > 0:
            self._flusher = threading.Thread(target=self._flush_periodically, name="journal-fsync", daemon=True)
            self._flusher.start()

    # ---- public API ---------------------------------------------------------------------

    @staticmethod
    def frame_header(record: bytes) -> bytes:
        """The frame header that ``append`` writes before ``record``: its length and CRC.

        A caller that orders its appends with a lock of its own computes it before taking
        that lock and passes it to ``append``: zlib releases the GIL on large buffers, and
        getting it back can take a thread switch interval (5 ms) while other threads run
        Python, which under a lock stalls every other appender for as long."""
        return _FRAME_HEADER.pack(len(record), _checksum(record, len(record)))

    def append(self, record: bytes, header: bytes | None = None) -> int:
        """Store ``record`` and return its sequence number. ``header``, if given, is
        ``frame_header(record)``.

        When this returns the bytes are in the OS page cache (they survive the process
        being killed). Raises ``JournalFull`` when the budget (or the disk) has no room
        now, ``ValueError`` when the record is bigger than the whole budget, and
        ``RuntimeError`` after ``close()``.
        """
        size = len(record)
        frame_bytes = RECORD_HEADER_BYTES + size
        if frame_bytes > self._max_bytes or size > _MAX_RECORD_BYTES:
            raise ValueError(
                f"a {size}-byte record can never fit in the journal's {self._max_bytes}-byte budget"
            )
        # The CRC is computed outside the lock: zlib releases the GIL on large buffers, so
        # concurrent appenders checksum in parallel and hold the lock only for the write.
        if header is None:
            header = self.frame_header(record)
        with self._lock:
            if self._closed:
                raise RuntimeError("the journal is closed")
            if self._appended_bytes - self._committed_bytes + frame_bytes > self._max_bytes:
                raise JournalFull(
                    f"journal budget used up: {self._appended_bytes - self._committed_bytes} of "
                    f"{self._max_bytes} bytes pending, {frame_bytes} more asked"
                )
            if (self._active_size and self._active_size + frame_bytes > self._segment_bytes) or (
                self._rotate_before_next_append
            ):
                self._rotate()
            self._write_frame(header, record, frame_bytes)
            seq = self._next_seq
            self._next_seq = seq + 1
            self._active_size += frame_bytes
            self._appended_bytes += frame_bytes
            self._record_ends.append(self._appended_bytes)
            if self._fsync_interval == 0:
                _sync_data(self._active_fd)
            else:
                self._unsynced = True
            if self._reader_waiting:
                self._records_available.notify()
            return seq

    def read(self, max_records: int, timeout: float) -> list[tuple[int, bytes]]:
        """The next records not yet read, in seq order, at most ``max_records``.

        Waits up to ``timeout`` seconds for at least one; returns ``[]`` on timeout and
        after ``close()``. Records already committed (e.g. by a consumer that tracks
        appends itself) are skipped.
        """
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._read_lock:
            while True:
                with self._lock:
                    while self._read_seq >= self._next_seq and not self._closed:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return []
                        self._reader_waiting = True
                        try:
                            self._records_available.wait(remaining)
                        finally:
                            self._reader_waiting = False
                    if self._closed:
                        return []
                    available_end = self._next_seq
                records = self._read_records(available_end, max_records)
                if records:
                    return records
                # Everything that was there had been committed already: wait for more.

    def commit(self, seq: int) -> None:
        """Every record up to ``seq`` is done: persist the cursor, free disk and budget.

        Committing a seq at or below ``last_committed`` does nothing; committing one that
        was never appended raises ``ValueError``. After ``close()`` this is a no-op (the
        records are simply replayed at the next open).
        """
        with self._commit_lock:
            with self._lock:
                if self._closed or seq <= self._committed:
                    return
                if seq >= self._next_seq:
                    raise ValueError(f"cannot commit record {seq}: the last one appended is {self._next_seq - 1}")
                committed_bytes = self._record_ends[seq - self._ends_first_seq]
            # The cursor goes first: a crash between the two steps then leaves segments
            # that recovery knows to delete, never a cursor behind deleted data.
            self._write_cursor(seq)
            with self._lock:
                self._committed = seq
                self._committed_bytes = committed_bytes
                self._trim_record_ends()
                doomed = self._take_committed_segments()
        for first in doomed:
            try:
                (self._directory / _segment_name(first)).unlink()
            except FileNotFoundError:
                pass
            except OSError:
                # Recovery deletes it at the next open; only disk space is at stake.
                log.exception("could not delete committed journal segment %s", _segment_name(first))

    @property
    def pending_bytes(self) -> int:
        """Bytes (frames: records + headers) appended and not yet committed."""
        with self._lock:
            return self._appended_bytes - self._committed_bytes

    @property
    def max_bytes(self) -> int:
        """The budget: ``pending_bytes`` never exceeds it."""
        return self._max_bytes

    @property
    def pending_records(self) -> int:
        """Records appended and not yet committed (seqs lost to corruption count until committed past)."""
        with self._lock:
            return self._next_seq - 1 - self._committed

    @property
    def last_appended(self) -> int:
        """The highest seq appended so far (last_committed when nothing is pending)."""
        with self._lock:
            return self._next_seq - 1

    @property
    def last_committed(self) -> int:
        """The highest committed seq; -1 for a new journal (first seq minus one in general)."""
        with self._lock:
            return self._committed

    def close(self) -> None:
        """Fsync everything, wake a blocked ``read``, release the files. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._records_available.notify_all()
        if self._flusher is not None:
            self._stop_flusher.set()
            self._flusher.join()
        with self._commit_lock:
            with self._lock:
                for fd in [*self._retired_fds, self._active_fd]:
                    try:
                        _sync_data(fd)
                    except OSError:
                        log.exception("journal fsync failed at close; the last records may not survive a power cut")
                    finally:
                        os.close(fd)
                self._retired_fds = []
                self._active_fd = -1
            self._fsync_cursor()
            _fsync_directory(self._directory)
            with self._read_lock:
                self._close_read_segment()
            self._lock_file.close()  # releases the flock

    # ---- appending ------------------------------------------------------------------------

    def _write_frame(self, header: bytes, record: bytes, frame_bytes: int) -> None:
        fd = self._active_fd
        try:
            # One syscall, and no copy of the record to glue the header on.
            written = os.writev(fd, (header, record))
            if written < frame_bytes:  # legal for regular files only on a full disk or a signal
                rest = memoryview(header + record)
                while written < frame_bytes:
                    written += os.write(fd, rest[written:])
        except OSError as error:
            self._undo_partial_write()
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise JournalFull(f"no space left for the journal in {self._directory}") from error
            raise

    def _undo_partial_write(self) -> None:
        """Cut a half-written frame off, so that the next record does not follow garbage."""
        try:
            os.ftruncate(self._active_fd, self._active_size)
        except OSError:
            # The garbage stays; start a new segment so that it ends this one. Recovery
            # and the reader both treat it as the end of that segment.
            log.exception("could not truncate a failed journal write; starting a new segment")
            self._rotate_before_next_append = True

    def _rotate(self) -> None:
        """Start a new segment named by the next seq (under _lock)."""
        first = self._next_seq
        # O_TRUNC: the only file that can already have this name is an active segment
        # that holds no record (after a failed write), which is safe to empty.
        new_fd = os.open(self._directory / _segment_name(first), _APPEND_FLAGS | os.O_TRUNC, 0o644)
        old_fd = self._active_fd
        self._active_fd = new_fd
        self._active_size = 0
        self._rotate_before_next_append = False
        if self._segments[-1] != first:
            self._segments.append(first)
        if self._fsync_interval == 0:
            try:
                _sync_data(old_fd)
            finally:
                os.close(old_fd)
            _fsync_directory(self._directory)
        else:
            # fsync takes milliseconds: leave it (and the close) to the flusher thread
            # rather than stall every appender now.
            self._retired_fds.append(old_fd)
            self._directory_unsynced = True

    # ---- fsync ----------------------------------------------------------------------------

    def _flush_periodically(self) -> None:
        while not self._stop_flusher.wait(self._fsync_interval):
            try:
                self._sync_to_disk()
            except OSError:
                log.exception("journal fsync failed; data since the last fsync may not survive a power cut")

    def _sync_to_disk(self) -> None:
        with self._lock:
            active_fd = self._active_fd if self._unsynced else -1
            self._unsynced = False
            retired, self._retired_fds = self._retired_fds, []
            directory_unsynced, self._directory_unsynced = self._directory_unsynced, False
        # Outside the lock so that appends go on meanwhile. The fds stay valid: only this
        # thread closes retired fds, and close() joins this thread before closing the rest.
        for fd in retired:
            try:
                _sync_data(fd)
            finally:
                os.close(fd)
        if active_fd >= 0:
            _sync_data(active_fd)
        if directory_unsynced:
            _fsync_directory(self._directory)

    # ---- committing -----------------------------------------------------------------------

    def _write_cursor(self, seq: int) -> None:
        tmp = self._directory / _CURSOR_TMP_NAME
        with open(tmp, "w", encoding="ascii") as file:
            file.write(f"{seq}\n")
        os.replace(tmp, self._directory / _CURSOR_NAME)

    def _fsync_cursor(self) -> None:
        try:
            fd = os.open(self._directory / _CURSOR_NAME, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _trim_record_ends(self) -> None:
        """Forget the byte marks of committed records (under _lock), in big steps: the
        deletion moves the rest of the array."""
        done = self._committed + 1 - self._ends_first_seq
        if done >= 4096 and done * 2 >= len(self._record_ends):
            del self._record_ends[:done]
            self._ends_first_seq += done

    def _take_committed_segments(self) -> list[int]:
        """Drop from the list the segments whose records are all committed (under _lock).
        The active (last) segment stays: more records will go into it."""
        doomed = []
        while len(self._segments) > 1 and self._segments[1] <= self._committed + 1:
            doomed.append(self._segments.pop(0))
        return doomed

    # ---- reading --------------------------------------------------------------------------

    def _read_records(self, available_end: int, max_records: int) -> list[tuple[int, bytes]]:
        """Read from disk records below ``available_end`` (all fully written) (under _read_lock)."""
        records: list[tuple[int, bytes]] = []
        while len(records) < max_records:
            # A commit may have overtaken the reader; plain int read, it only ever grows.
            committed = self._committed
            if self._read_seq <= committed:
                self._read_seq = committed + 1
                if self._read_fd >= 0 and self._segment_for(self._read_seq) != self._read_segment_first:
                    self._close_read_segment()
            if self._read_seq >= available_end:
                break
            if self._read_fd < 0 and not self._open_read_segment(self._segment_for(self._read_seq)):
                continue
            header = _pread_exact(self._read_fd, RECORD_HEADER_BYTES, self._read_offset)
            if len(header) < RECORD_HEADER_BYTES:
                self._open_next_read_segment("ends")
                continue
            size, crc = _FRAME_HEADER.unpack(header)
            position_seq = self._read_position_seq
            if position_seq < self._read_seq:
                # Walking from the segment start to the wanted record: headers only.
                self._read_offset += RECORD_HEADER_BYTES + size
                self._read_position_seq = position_seq + 1
                continue
            payload = _pread_exact(self._read_fd, size, self._read_offset + RECORD_HEADER_BYTES)
            if len(payload) < size or _checksum(payload, size) != crc:
                log.error(
                    "journal record %d in %s is corrupt; skipping the rest of that segment",
                    position_seq,
                    _segment_name(self._read_segment_first),
                )
                self._open_next_read_segment("is corrupt")
                continue
            records.append((position_seq, payload))
            self._read_offset += RECORD_HEADER_BYTES + size
            self._read_position_seq = self._read_seq = position_seq + 1
        return records

    def _segment_for(self, seq: int) -> int:
        """First seq of the segment that holds ``seq`` (or the first one after a hole)."""
        with self._lock:
            index = bisect.bisect_right(self._segments, seq) - 1
            return self._segments[max(index, 0)]

    def _open_read_segment(self, first: int) -> bool:
        """Position the reader at the start of segment ``first``; False if a commit deleted it."""
        self._close_read_segment()
        try:
            self._read_fd = os.open(self._directory / _segment_name(first), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            with self._lock:
                if first in self._segments:
                    raise
            return False  # committed and deleted meanwhile: the caller looks again
        self._read_segment_first = first
        self._read_offset = 0
        self._read_position_seq = first
        if first > self._read_seq:
            log.warning("journal records %d to %d are missing (lost to corruption)", self._read_seq, first - 1)
            self._read_seq = first
        return True

    def _open_next_read_segment(self, why: str) -> None:
        with self._lock:
            index = bisect.bisect_right(self._segments, self._read_segment_first)
            next_first = self._segments[index] if index < len(self._segments) else None
        if next_first is None:
            raise RuntimeError(
                f"journal segment {_segment_name(self._read_segment_first)} {why} before record "
                f"{self._read_seq}, and no segment follows"
            )
        self._open_read_segment(next_first)

    def _close_read_segment(self) -> None:
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1
            self._read_segment_first = -1

    # ---- opening ----------------------------------------------------------------------------

    def _take_directory_lock(self) -> BinaryIO:
        lock_file = open(self._directory / _LOCK_NAME, "a+b")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise RuntimeError(
                f"the journal in {self._directory} is already open (in this or another process)"
            ) from None
        return lock_file

    def _recover(self) -> None:
        directory = self._directory
        (directory / _CURSOR_TMP_NAME).unlink(missing_ok=True)
        committed = self._read_cursor()
        firsts = self._list_segments()
        changed = False

        # Segments whose records are all committed (the commit died before deleting them).
        while len(firsts) > 1 and firsts[1] <= committed + 1:
            (directory / _segment_name(firsts.pop(0))).unlink()
            changed = True
        if firsts:
            # A lost or damaged cursor must not send the reader before the oldest record.
            committed = max(committed, firsts[0] - 1)

        self._committed = committed
        self._ends_first_seq = committed + 1
        expected_seq = firsts[0] if firsts else committed + 1
        for index, first in enumerate(firsts):
            if first > expected_seq:
                log.warning("journal records %d to %d are missing (lost to corruption)", expected_seq, first - 1)
                # Holes take no bytes, but keep the seq -> byte-mark indexing intact.
                for seq in range(expected_seq, first):
                    if seq > committed:
                        self._record_ends.append(self._appended_bytes)
            limit = firsts[index + 1] if index + 1 < len(firsts) else None
            count, truncated = self._scan_segment(first, limit, is_last=limit is None)
            changed |= truncated
            expected_seq = first + count

        self._next_seq = max(expected_seq, committed + 1)
        if firsts and expected_seq == self._next_seq:
            active_first = firsts[-1]
            self._active_fd = os.open(directory / _segment_name(active_first), _APPEND_FLAGS, 0o644)
            self._active_size = os.fstat(self._active_fd).st_size
        else:
            # New journal, or the cursor is ahead of the data (records lost to a power
            # cut after their commit): a new segment keeps names and numbers consistent.
            active_first = self._next_seq
            self._active_fd = os.open(directory / _segment_name(active_first), _APPEND_FLAGS | os.O_TRUNC, 0o644)
            firsts.append(active_first)
            changed = True
        self._segments = firsts
        self._read_seq = committed + 1
        if changed:
            _fsync_directory(directory)
        if self.pending_records:
            log.info(
                "journal %s: %d uncommitted records (%d bytes) to replay from seq %d",
                directory,
                self._next_seq - 1 - committed,
                self._appended_bytes,
                committed + 1,
            )

    def _read_cursor(self) -> int:
        try:
            text = (self._directory / _CURSOR_NAME).read_text(encoding="ascii")
        except FileNotFoundError:
            return -1
        try:
            return int(text.strip())
        except ValueError:
            # Only replays more than needed: the oldest segment on disk bounds the damage.
            log.warning("journal cursor %r is unreadable; replaying from the oldest segment", text[:40])
            return -1

    def _list_segments(self) -> list[int]:
        firsts = []
        for path in self._directory.iterdir():
            if path.suffix != _SEGMENT_SUFFIX:
                continue
            try:
                firsts.append(int(path.stem))
            except ValueError:
                log.warning("ignoring stray file %s in the journal", path)
        firsts.sort()
        return firsts

    def _scan_segment(self, first: int, limit_seq: int | None, *, is_last: bool) -> tuple[int, bool]:
        """Check every frame of a segment, count the bytes of uncommitted ones and cut the
        file after the last good frame. Returns (record count, whether it was cut)."""
        path = self._directory / _segment_name(first)
        committed = self._committed
        seq = first
        good_end = 0
        with open(path, "r+b") as file:
            file_size = os.fstat(file.fileno()).st_size
            while limit_seq is None or seq < limit_seq:
                header = file.read(RECORD_HEADER_BYTES)
                if len(header) < RECORD_HEADER_BYTES:
                    break
                size, crc = _FRAME_HEADER.unpack(header)
                # Check the length against the file first: a garbage length must not make
                # us allocate gigabytes.
                if good_end + RECORD_HEADER_BYTES + size > file_size:
                    break
                payload = file.read(size)
                if len(payload) < size or _checksum(payload, size) != crc:
                    break
                good_end += RECORD_HEADER_BYTES + size
                if seq > committed:
                    self._appended_bytes += RECORD_HEADER_BYTES + size
                    self._record_ends.append(self._appended_bytes)
                seq += 1
            if good_end < file_size:
                if is_last:
                    log.warning(
                        "journal: dropping a torn tail of %d bytes after record %d in %s",
                        file_size - good_end,
                        seq - 1,
                        path.name,
                    )
                else:
                    log.error(
                        "journal: segment %s is corrupt after record %d; dropping its last %d bytes",
                        path.name,
                        seq - 1,
                        file_size - good_end,
                    )
                file.truncate(good_end)
                file.flush()
                os.fsync(file.fileno())
        return seq - first, good_end < file_size
