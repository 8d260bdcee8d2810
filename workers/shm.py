"""The one module that touches ``multiprocessing.shared_memory``.

Only the supervisor creates and unlinks segments. Workers attach by name and must never
unlink: on Python 3.11 and 3.12 attaching registers the segment with the resource
tracker (cpython#82300). Unregistering afterwards is wrong too: forkserver children
share the supervisor's tracker, so that would drop the supervisor's own registration.
So an attach never registers at all (``track=False`` on 3.13+, a suppressed call
before). Every segment name starts with :data:`PREFIX`, which is how tests and
``tools/shm_gc.py`` find leaks.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
import time
from collections.abc import Sized
from multiprocessing import resource_tracker, shared_memory

__all__ = ["PREFIX", "Segment", "attach", "create", "leaked_segments", "mapped_segments",
           "remove_abandoned", "remove_leaked"]

PREFIX = "somasync-"

Segment = shared_memory.SharedMemory


def create(size: int, tag: str) -> Segment:
    """Create a zero-filled segment named ``somasync-<tag>-<random>`` (supervisor only)."""
    name = f"{PREFIX}{tag}-{secrets.token_hex(4)}"
    return shared_memory.SharedMemory(name=name, create=True, size=size)


def attach(name: str) -> Segment:
    """Attach to a segment created by the supervisor, without ever unlinking it."""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)  # type: ignore[call-arg]
    with _attach_lock:
        register = resource_tracker.register
        resource_tracker.register = _register_unless_shared_memory
        try:
            return shared_memory.SharedMemory(name=name)
        finally:
            resource_tracker.register = register


_attach_lock = threading.Lock()
_real_register = resource_tracker.register


def _register_unless_shared_memory(name: Sized, rtype: str) -> None:
    if rtype != "shared_memory":
        _real_register(name, rtype)


def leaked_segments(tag: str = "", *, prefix: str = PREFIX) -> list[str]:
    """Names of ``somasync`` segments in /dev/shm (optionally only those with ``tag``);
    ``prefix``: segments named otherwise (a test's own)."""
    try:
        names = os.listdir("/dev/shm")
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix + tag))


def remove_leaked(tag: str) -> list[str]:
    """Unlink the segments a node with ``tag`` left behind (its supervisor was killed
    with SIGKILL, so it could not); returns their names. Never touches other tags."""
    if not tag:
        raise ValueError("remove_leaked needs a node's segment tag")
    removed = []
    for name in leaked_segments(tag):
        try:
            os.unlink(os.path.join("/dev/shm", name))
        except FileNotFoundError:
            continue
        removed.append(name)
    return removed


def mapped_segments(proc: str = "/proc", *, prefix: str = PREFIX) -> dict[str, list[int]]:
    """``somasync`` segment name -> PIDs that map it (read from ``/proc/<pid>/maps``);
    ``prefix`` as for :func:`leaked_segments`.

    Raises:
        OSError: ``proc`` is unreadable (nothing can be proved unused).
    """
    users: dict[str, list[int]] = {}
    marker = f"/dev/shm/{prefix}"
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "maps")) as maps:
                names = {line.rsplit(None, 1)[-1] for line in maps if marker in line}
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # gone meanwhile, or another user's process we may not read
        for name in names:
            users.setdefault(os.path.basename(name.removesuffix(" (deleted)")), []).append(
                int(entry.name))
    return users


def remove_abandoned(*, older_than: float = 60.0, prefix: str = PREFIX) -> list[str]:
    """Unlink every ``somasync`` segment that no process maps and that is older than
    ``older_than`` seconds (a node starting now maps its own at once; the age keeps
    this from racing with one between creating and mapping). What a SIGKILL of a whole
    node left behind goes at the next start of any sharded node. Returns their names;
    nothing when ``/proc`` cannot be read. ``prefix``: sweep only segments named so
    instead (a test sweeping its own, which no node's start sweeps meanwhile)."""
    try:
        users = mapped_segments(prefix=prefix)
    except OSError:
        return []
    removed = []
    now = time.time()
    for name in leaked_segments(prefix=prefix):
        path = os.path.join("/dev/shm", name)
        try:
            if name in users or now - os.stat(path).st_mtime < older_than:
                continue
            os.unlink(path)
        except FileNotFoundError:
            continue
        except PermissionError:
            continue  # another user's node
        removed.append(name)
    return removed
