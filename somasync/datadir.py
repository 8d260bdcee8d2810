"""A node's data directory: what it keeps across restarts.

``SynapseNodeBuilder.with_data_dir(path)`` (``NodeConfig.data_dir``; the agent's
``--data-dir``, on by default there) keeps in one directory, mode 0700:

* ``identity.json``: the node's key (the format of ``somasync keys generate``, mode
  0600), so a restarted node is the same member with the same name;
* ``delivered.snapshot`` and ``delivered.log``: every (origin, source, sequence) the
  node delivered to its application or published itself, as per-stream intervals. A
  restarted node takes them as delivered: it delivers none of them again, refuses
  replays of them for good (not only for ``max_message_age``), and its digests ask its
  neighbours for exactly what it missed while it was down;
* ``revocations.json``: the operators' revocation notices it applied, so a revoked key
  stays refused from the first moment after a restart;
* ``lock``: held (``flock``) while a node uses the directory; a second node on it gets
  :class:`~somasync.errors.DataDirError` instead of corrupting the first one's record.

Crash safety: each delivery is appended to the log with one ``write`` before the
application sees the message, so a killed process loses nothing and re-delivers
nothing (the kernel holds what was written). The log is ``fsync``-ed at the first
delivery :data:`SYNC_INTERVAL` after the last sync, and at stop: a power loss may
re-deliver what arrived since.
Snapshots are written to a temporary file, synced and renamed over the old one, then
the log is emptied; a crash between the two replays the log over the new snapshot,
which is harmless (adding a delivered number again changes nothing).

Anything unreadable (a snapshot that does not parse, a log record that fails its
checksum anywhere but at the very end, a directory that is a file) raises
:class:`~somasync.errors.DataDirError` naming the file: a node never silently starts
afresh, which would deliver old messages again. Only a torn last log record (the
process died inside that ``write``) is dropped, and logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import orjson

from somasync.core.antientropy import StreamTable
from somasync.core.crypto import Identity
from somasync.core.wire import StreamKey
from somasync.errors import DataDirError, KeyFileError
from somasync.keys import load_identity, save_identity

__all__ = ["COMPACT_RECORDS", "SYNC_INTERVAL", "DataDir", "default_agent_directory",
           "kept_identity"]

_log = logging.getLogger("somasync.datadir")

IDENTITY = "identity.json"
SNAPSHOT = "delivered.snapshot"
LOG = "delivered.log"
REVOCATIONS = "revocations.json"
LOCK = "lock"
SNAPSHOT_TYPE = "somasync-delivered"
SNAPSHOT_VERSION = 1

COMPACT_RECORDS = 65_536
"""Log records after which the record is rewritten as a snapshot and the log emptied:
replaying the log at start stays fast, and the log stays under ~5 MiB."""
SYNC_INTERVAL = 1.0
"""Seconds between ``fsync`` calls of the log while deliveries arrive (power-loss bound)."""

# u32 crc32 of (length, body) | u16 body length | body: origin(32) u8 len source u64 sequence
_RECORD = struct.Struct("<IH")
_LENGTH = struct.Struct("<H")
_MIN_BODY = 32 + 1 + 1 + 8
_MAX_BODY = 32 + 1 + 255 + 8
_TORN = object()  # a last record cut short by a crash
_SEQUENCE = struct.Struct("<Q")


def default_agent_directory(port: int) -> Path:
    """The agent's data directory when none is given: one per listening port under
    ``$XDG_STATE_HOME/somasync`` (``~/.local/state/somasync``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state")
    return Path(base) / "somasync" / f"agent-{port}"


def kept_identity(path: str | os.PathLike[str], given: Identity | None = None) -> Identity:
    """The node identity kept in the data directory ``path``; on first use ``given`` (or
    a fresh key) is saved there. A ``given`` key other than the kept one raises
    DataDirError: the directory's record belongs to one identity.

    Raises:
        DataDirError: the directory or its identity file cannot be used.
    """
    directory = _make_directory(Path(path))
    file = directory / IDENTITY
    if file.exists():
        try:
            kept = load_identity(file)
        except KeyFileError as exc:
            raise DataDirError(file, str(exc).partition(": ")[2]) from None
        if given is not None and given.public_key != kept.public_key:
            raise DataDirError(file, f"holds the key {kept.public_key.hex()[:16]}..., not "
                                     f"the one given ({given.public_key.hex()[:16]}...); "
                                     f"use another data directory")
        return kept
    identity = given if given is not None else Identity.generate()
    try:
        save_identity(identity, file)
    except KeyFileError as exc:
        raise DataDirError(file, str(exc).partition(": ")[2]) from None
    return identity


def _make_directory(path: Path) -> Path:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise DataDirError(path, "exists and is not a directory") from None
    except OSError as exc:
        raise DataDirError(path, f"cannot create it: {exc.strerror}") from None
    if not path.is_dir():
        raise DataDirError(path, "exists and is not a directory")
    return path


def _encode_record(stream: StreamKey, sequence: int) -> bytes:
    origin, source = stream
    name = source.encode()
    body = origin + bytes((len(name),)) + name + _SEQUENCE.pack(sequence)
    length = _LENGTH.pack(len(body))
    return _RECORD.pack(zlib.crc32(length + body), len(body)) + body


class DataDir:
    """One node's data directory (see the module docstring), locked while open.

    Args:
        path: the directory; created (mode 0700) when missing.
        max_streams: streams remembered at most (``GossipConfig.max_streams``): the
            least recently active beyond it are forgotten, as in memory.
        acquire: take the lock (and read the record) now; a node passes False and
            calls :meth:`acquire` when it starts, so one built and never started, or
            stopped, holds nothing.

    Raises:
        DataDirError: the directory cannot be created or used, another node holds it,
            or what it holds is unreadable.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_streams: int = 100_000,
                 acquire: bool = True) -> None:
        self.path = Path(path)
        self._record = StreamTable(max_streams)
        self._lock_fd: int | None = None
        self._log_fd: int | None = None
        self._log_records = 0
        self._unsynced = False
        self._last_sync = 0.0
        _make_directory(self.path)
        if acquire:
            self.acquire()

    # --- the lock ---------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the directory's lock and read what it holds into memory (merged with
        what this object already knew). Does nothing when already held.

        Raises:
            DataDirError: another process (or another DataDir object) holds it, or its
                contents are unreadable.
        """
        if self._lock_fd is not None:
            return
        lock_path = self.path / LOCK
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DataDirError(lock_path, f"cannot open: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirError(self.path, f"is in use by another node (process {holder})"
                               ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        try:
            self._load()
            self._log_fd = os.open(self.path / LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                   0o600)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Write the record as a snapshot (synced), then let go of the directory."""
        if self._lock_fd is None:
            return
        try:
            if self._log_fd is not None:
                self.compact()
        finally:
            if self._log_fd is not None:
                os.close(self._log_fd)
                self._log_fd = None
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- delivered messages ----------------------------------------------------------

    def delivered(self) -> dict[StreamKey, list[tuple[int, int]]]:
        """Every stream's delivered sequence numbers, as sorted closed intervals."""
        return {stream: tracker.intervals() for stream, tracker in self._record.items()}

    def record(self, stream: StreamKey, sequence: int, *, now: float) -> None:
        """``sequence`` of ``stream`` was delivered (or published here): append it to
        the log before the application sees it. ``now``: the caller's monotonic clock."""
        if not self._record.add(stream, sequence, now=now):
            return
        fd = self._log_fd
        if fd is None:
            raise DataDirError(self.path, "is not held by this node (stopped?)")
        record = _encode_record(stream, sequence)
        try:
            written = os.write(fd, record)
        except OSError as exc:
            raise DataDirError(self.path / LOG, f"cannot append: {exc.strerror}") from None
        if written != len(record):
            # A short write (disk full): take its part back, so that later records do
            # not follow a torn one (the next start would call that corruption).
            with contextlib.suppress(OSError):
                os.ftruncate(fd, os.fstat(fd).st_size - written)
            raise DataDirError(self.path / LOG, f"cannot append: wrote {written} of "
                                                f"{len(record)} bytes")
        self._log_records += 1
        self._unsynced = True
        if self._log_records >= COMPACT_RECORDS:
            self.compact()
        elif now - self._last_sync >= SYNC_INTERVAL:
            self.sync(now=now)

    def sync(self, *, now: float) -> None:
        """``fsync`` the log if anything was appended since the last time."""
        if self._unsynced and self._log_fd is not None:
            os.fsync(self._log_fd)
            self._unsynced = False
        self._last_sync = now

    def compact(self) -> None:
        """Write the whole record as a snapshot (crash-safely) and empty the log."""
        body = orjson.dumps({
            "type": SNAPSHOT_TYPE, "version": SNAPSHOT_VERSION, "written_at": time.time(),
            "streams": [[origin.hex(), source, intervals]
                        for (origin, source), intervals in self.delivered().items()],
        })
        _replace_file(self.path / SNAPSHOT, body)
        if self._log_fd is not None:
            os.ftruncate(self._log_fd, 0)
            os.fsync(self._log_fd)
        self._log_records = 0
        self._unsynced = False

    # --- revocations -------------------------------------------------------------------

    def revocations(self) -> list[tuple[bytes, bytes]]:
        """(revoked key, notice frame) of each revocation kept here."""
        path = self.path / REVOCATIONS
        raw = _read(path)
        if raw is None:
            return []
        try:
            data = orjson.loads(raw)
            return [(bytes.fromhex(key), bytes.fromhex(frame))
                    for key, frame in data["revocations"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise DataDirError(path, "is corrupt (not a revocation list); move it away "
                                     "only if the revocations it held are known") from None

    def save_revocations(self, revocations: Iterable[tuple[bytes, bytes]]) -> None:
        """Keep these (revoked key, notice frame) pairs, replacing the list."""
        body = orjson.dumps({"revocations": [[key.hex(), frame.hex()]
                                             for key, frame in revocations]})
        _replace_file(self.path / REVOCATIONS, body)

    # --- reading ---------------------------------------------------------------------

    def _load(self) -> None:
        now = time.monotonic()
        snapshot = self._read_snapshot()
        for stream, intervals in snapshot.items():
            self._record.restore(stream, intervals, now=now)
        self._log_records = 0
        for stream, sequence in self._read_log():
            self._record.add(stream, sequence, now=now)
            self._log_records += 1

    def _read_snapshot(self) -> Mapping[StreamKey, Sequence[tuple[int, int]]]:
        path = self.path / SNAPSHOT
        raw = _read(path)
        if raw is None:
            return {}
        try:
            data = orjson.loads(raw)
            if data.get("type") != SNAPSHOT_TYPE:
                raise ValueError("not a delivered-messages snapshot")
            if data.get("version") != SNAPSHOT_VERSION:
                raise ValueError(f"version {data.get('version')!r} is not "
                                 f"{SNAPSHOT_VERSION}")
            streams: dict[StreamKey, list[tuple[int, int]]] = {}
            for origin, source, intervals in data["streams"]:
                key = bytes.fromhex(origin)
                if len(key) != 32 or not isinstance(source, str):
                    raise ValueError("a stream is not (32-byte key, name)")
                streams[(key, source)] = [(int(lo), int(hi)) for lo, hi in intervals]
            return streams
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError,
                ValueError) as exc:
            raise DataDirError(path, f"is corrupt ({exc}); the node will not start afresh "
                                     f"on its own, since that would deliver old messages "
                                     f"again: move the directory away to do so") from None

    def _read_log(self) -> list[tuple[StreamKey, int]]:
        path = self.path / LOG
        raw = _read(path)
        if raw is None:
            return []
        entries: list[tuple[StreamKey, int]] = []
        offset = 0
        while offset < len(raw):
            entry, end = _decode_record(raw, offset)
            if entry is None:
                raise DataDirError(path, f"is corrupt at byte {offset} (a record fails "
                                         f"its checksum); the node will not start afresh "
                                         f"on its own: move the directory away to do so")
            if entry is _TORN:
                _log.warning("%s: dropped a torn last record (%d bytes) left by a crash",
                             path, len(raw) - offset)
                with open(path, "r+b") as handle:
                    handle.truncate(offset)
                break
            entries.append(entry)  # type: ignore[arg-type]
            offset = end
        return entries


def _read(path: Path) -> bytes | None:
    """The file's bytes; None when it does not exist (yet)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataDirError(path, f"cannot read: {exc.strerror}") from None


def _decode_record(raw: bytes, offset: int) -> tuple[object, int]:
    """(entry, end of the record), or (``_TORN``, end of the data) for a last record cut
    short (only a crash inside its write leaves one: it cannot be whole and shorter
    than the rest of the file), or (None, offset) for a damaged one."""
    left = len(raw) - offset
    if left < _RECORD.size:
        return _TORN, len(raw)
    checksum, length = _RECORD.unpack_from(raw, offset)
    if not _MIN_BODY <= length <= _MAX_BODY:
        return None, offset
    start = offset + _RECORD.size
    end = start + length
    if end > len(raw):
        # Cut short by a crash only if what is there agrees with the length: a damaged
        # length near the end must not pass for a torn record (the rest would be lost).
        if start + 33 <= len(raw) and 32 + 1 + raw[start + 32] + 8 != length:
            return None, offset
        return _TORN, len(raw)
    # The checksum covers the length too: a damaged length is caught, not taken for a
    # torn record that would silently cut the log short.
    if zlib.crc32(raw[offset + 4 : end]) != checksum:
        return None, offset
    body = raw[start:end]
    name_length = body[32]
    if 32 + 1 + name_length + 8 != length:
        return None, offset
    try:
        source = body[33 : 33 + name_length].decode()
    except UnicodeDecodeError:
        return None, offset
    (sequence,) = _SEQUENCE.unpack_from(body, 33 + name_length)
    return ((bytes(body[:32]), source), sequence), end


def _replace_file(path: Path, body: bytes) -> None:
    """Write ``body`` to ``path`` so that a crash leaves the old file or the new one."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        raise DataDirError(path, f"cannot write: {exc.strerror}") from None
