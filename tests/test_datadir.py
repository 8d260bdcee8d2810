"""The data directory: what a node keeps across restarts, and how it refuses to forget."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from somasync import datadir
from somasync.core.crypto import Identity
from somasync.datadir import DataDir, kept_identity
from somasync.errors import DataDirError

ORIGIN = bytes(range(32))
OTHER = bytes(32 - i for i in range(32))


def crash(data: DataDir) -> Path:
    """Let go of ``data`` as a killed process would (no release, no snapshot); return
    its log."""
    os.close(data._lock_fd)  # type: ignore[arg-type]
    data._lock_fd = None
    return data.path / datadir.LOG


def test_what_was_recorded_is_there_after_reopening(tmp_path: Path) -> None:
    data = DataDir(tmp_path / "node")
    for sequence in (1, 2, 3, 7):
        data.record((ORIGIN, "edge-1"), sequence, now=0.0)
    data.record((OTHER, "edge-2"), 10, now=0.0)
    data.release()
    again = DataDir(tmp_path / "node")
    assert again.delivered() == {(ORIGIN, "edge-1"): [(1, 3), (7, 7)],
                                 (OTHER, "edge-2"): [(10, 10)]}
    again.release()


def test_a_killed_process_loses_nothing_it_recorded(tmp_path: Path) -> None:
    """No release, no sync, no compaction: the process is SIGKILLed right after the
    appends, as a crash would leave it."""
    script = textwrap.dedent(f"""
        import os, signal
        from somasync.datadir import DataDir
        data = DataDir({str(tmp_path / 'node')!r})
        for sequence in range(1, 101):
            data.record(({ORIGIN!r}, "edge-1"), sequence, now=0.0)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], timeout=60, check=False)
    assert result.returncode == -9
    data = DataDir(tmp_path / "node")
    assert data.delivered() == {(ORIGIN, "edge-1"): [(1, 100)]}
    data.release()


def test_a_torn_last_record_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    data = DataDir(tmp_path / "node")
    data.record((ORIGIN, "edge-1"), 1, now=0.0)
    data.record((ORIGIN, "edge-1"), 2, now=0.0)
    log = crash(data)
    size = log.stat().st_size
    with open(log, "r+b") as handle:
        handle.truncate(size - 3)  # the process died inside the second write
    again = DataDir(tmp_path / "node")
    assert again.delivered() == {(ORIGIN, "edge-1"): [(1, 1)]}
    again.record((ORIGIN, "edge-1"), 2, now=0.0)  # appends after the cut, readable
    again.release()
    assert DataDir(tmp_path / "node").delivered() == {(ORIGIN, "edge-1"): [(1, 2)]}


def test_a_damaged_record_in_the_middle_of_the_log_is_an_error_not_a_reset(
        tmp_path: Path) -> None:
    data = DataDir(tmp_path / "node")
    for sequence in range(1, 4):
        data.record((ORIGIN, "edge-1"), sequence, now=0.0)
    log = crash(data)
    raw = bytearray(log.read_bytes())
    raw[10] ^= 0xFF  # inside the first record's body
    log.write_bytes(bytes(raw))
    with pytest.raises(DataDirError, match="corrupt at byte 0") as caught:
        DataDir(tmp_path / "node")
    assert caught.value.path == str(log)


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"type": "something-else"}',
                                     b'{"type": "somasync-delivered", "version": 99}',
                                     b'{"type": "somasync-delivered", "version": 1, '
                                     b'"streams": [["abcd", "x", []]]}'])
def test_an_unreadable_snapshot_is_an_error_naming_it(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "node").mkdir()
    snapshot = tmp_path / "node" / datadir.SNAPSHOT
    snapshot.write_bytes(content)
    with pytest.raises(DataDirError, match="is corrupt") as caught:
        DataDir(tmp_path / "node")
    assert caught.value.path == str(snapshot)


def test_compaction_writes_a_snapshot_and_empties_the_log(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setattr(datadir, "COMPACT_RECORDS", 10)
    data = DataDir(tmp_path / "node")
    for sequence in range(1, 26):
        data.record((ORIGIN, "edge-1"), sequence, now=0.0)
    log = tmp_path / "node" / datadir.LOG
    assert log.stat().st_size < 10 * 60  # emptied twice, five records since
    assert (tmp_path / "node" / datadir.SNAPSHOT).exists()
    crash(data)  # the log holds 21-25
    assert DataDir(tmp_path / "node").delivered() == {(ORIGIN, "edge-1"): [(1, 25)]}


def test_a_second_node_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    data = DataDir(tmp_path / "node")
    with pytest.raises(DataDirError, match=f"in use by another node \\(process {os.getpid()}"):
        DataDir(tmp_path / "node")
    data.release()
    DataDir(tmp_path / "node").release()  # free again once released


def test_the_identity_is_kept_and_a_different_one_is_refused(tmp_path: Path) -> None:
    first = kept_identity(tmp_path / "node")
    assert kept_identity(tmp_path / "node").public_key == first.public_key
    assert kept_identity(tmp_path / "node", first).public_key == first.public_key
    mode = (tmp_path / "node" / datadir.IDENTITY).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE((tmp_path / "node").stat().st_mode) == 0o700
    with pytest.raises(DataDirError, match="not the one given"):
        kept_identity(tmp_path / "node", Identity.generate())


def test_a_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataDirError, match="not a directory"):
        DataDir(tmp_path / "file")
    with pytest.raises(DataDirError, match="not a directory"):
        kept_identity(tmp_path / "file")


def test_revocations_are_kept(tmp_path: Path) -> None:
    data = DataDir(tmp_path / "node")
    assert data.revocations() == []
    data.save_revocations([(ORIGIN, b"notice-1"), (OTHER, b"notice-2")])
    assert DataDir.revocations(data) == [(ORIGIN, b"notice-1"), (OTHER, b"notice-2")]
    (tmp_path / "node" / datadir.REVOCATIONS).write_text("[")
    with pytest.raises(DataDirError, match="corrupt"):
        data.revocations()
    data.release()


def _log_of(tmp_path: Path, records: int) -> tuple[Path, bytearray, int]:
    """A crashed node's log of ``records`` equal records: its path, bytes, record size."""
    data = DataDir(tmp_path / "node")
    for sequence in range(1, records + 1):
        data.record((ORIGIN, "edge-1"), sequence, now=0.0)
    log = crash(data)
    raw = bytearray(log.read_bytes())
    return log, raw, len(raw) // records


def test_a_damaged_length_in_the_middle_is_an_error_not_a_torn_tail(tmp_path: Path) -> None:
    """Found in review: the checksum did not cover the length, so a bogus length in the
    middle of the log passed for a torn last record and the rest was cut off silently."""
    log, raw, record = _log_of(tmp_path, 5)
    raw[record + 4] ^= 0x01  # the second record's length field
    log.write_bytes(bytes(raw))
    with pytest.raises(DataDirError, match=f"corrupt at byte {record}"):
        DataDir(tmp_path / "node")


def test_a_damaged_length_near_the_end_is_not_taken_for_a_torn_record(
        tmp_path: Path) -> None:
    """Found in the second review: a length pointing past the end of the log passed for
    a record torn by a crash, and the records after it were dropped."""
    log, raw, record = _log_of(tmp_path, 6)
    struct.pack_into("<H", raw, 3 * record + 4, 200)  # the fourth record's length
    log.write_bytes(bytes(raw))
    with pytest.raises(DataDirError, match=f"corrupt at byte {3 * record}"):
        DataDir(tmp_path / "node")
