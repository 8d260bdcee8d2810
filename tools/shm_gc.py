"""Find, and with ``--remove`` unlink, shared-memory segments that sharded nodes leaked.

    python tools/shm_gc.py            # list somasync-* segments, in use or leaked
    python tools/shm_gc.py --remove   # unlink the leaked ones

A sharded node's supervisor unlinks its segments when it stops, also after SIGTERM; only
a SIGKILL of the whole process group leaves them in /dev/shm until reboot. A segment is
*in use* while any process maps it (read from ``/proc/<pid>/maps``, so run this as the
user that runs the nodes, or as root); a segment nobody maps is leaked: its node is gone,
and no node attaches to a segment it did not create. Exit status 0; 1 when ``/proc``
cannot be read, so nothing can be proved leaked and nothing is removed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from somasync.workers import shm

SHM_DIR = Path("/dev/shm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--remove", action="store_true", help="unlink the leaked segments")
    parser.add_argument("--tag", default="",
                        help="only the segments of the node with this segment tag")
    args = parser.parse_args(argv)
    try:
        users = shm.mapped_segments()
    except OSError as exc:
        print(f"cannot read /proc ({exc}); nothing removed", file=sys.stderr)
        return 1
    segments = shm.leaked_segments(args.tag)
    leaked = [name for name in segments if name not in users]
    for name in segments:
        size = (SHM_DIR / name).stat().st_size if (SHM_DIR / name).exists() else 0
        state = (f"in use by pid {', '.join(map(str, sorted(users[name])))}"
                 if name in users else "leaked")
        print(f"{name:<40} {size / 2**20:8.1f} MiB  {state}")
    removed = 0
    if args.remove:
        for name in leaked:
            try:
                (SHM_DIR / name).unlink()
            except FileNotFoundError:
                continue
            removed += 1
    print(f"{len(segments)} segment(s), {len(leaked)} leaked"
          + (f", {removed} removed" if args.remove else
             (" (run with --remove to unlink them)" if leaked else "")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
