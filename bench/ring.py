"""Shared-memory ring vs multiprocessing.Queue: 256-byte records between two processes.

Each trial moves ``--records`` records from a producer process to a consumer process
(the parent) and times from the first record sent to the last one received. Four ways:

* ``queue/record``: ``Queue.put(record)`` per record (what code naturally writes);
* ``queue/batch``:  ``Queue.put(list_of_64)`` (a batched Queue, the strongest baseline);
* ``ring/record``:  one ring record per 256-byte record, tail published every 64;
* ``ring/batch``:   64 records packed per ring record (how the node uses its rings).

The consumer sleeps on a doorbell when the ring is empty (no busy polling), as workers
do. Median and min-max over ``--trials``; ratios are against queue/record and
queue/batch measured in the same run.

    python bench/ring.py --trials 5 --records 200000 [--json PATH]

A micro-benchmark of an internal choice of the sharded node, so it lives with the
repository's benchmarks rather than in the package.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import select
import statistics
import struct
import sys
import time
from collections.abc import Callable

from somasync.bench.machine import machine_info

RECORD = 256
BATCH = 64
CAPACITY = 4 * 1024 * 1024
_LEN = struct.Struct("<I")


def _queue_producer(queue: multiprocessing.Queue, count: int, batched: bool) -> None:  # type: ignore[type-arg]
    record = os.urandom(RECORD)
    # Distinct objects: pickle would send one shared object 64 times as back-references.
    batch = [os.urandom(RECORD) for _ in range(BATCH)]
    if batched:
        for _ in range(count // BATCH):
            queue.put(batch)
    else:
        for _ in range(count):
            queue.put(record)
    queue.put(None)


def _ring_producer(name: str, bell: str, count: int, batched: bool) -> None:
    from somasync.workers import shm
    from somasync.workers.doorbell import Ringer
    from somasync.workers.ring import RingWriter

    segment = shm.attach(name)
    assert segment.buf is not None
    writer = RingWriter(segment.buf)
    ringer = Ringer()
    record = os.urandom(RECORD)
    packed = b"".join(_LEN.pack(RECORD) + record for _ in range(BATCH))
    sent = 0
    while sent < count:
        if batched:
            ok = writer.write(packed)
            step = BATCH
        else:
            ok = True
            step = 0
            for _ in range(min(BATCH, count - sent)):
                if not writer.write(record):
                    ok = step > 0
                    break
                step += 1
        if writer.publish():
            ringer.ring(bell)
        if not ok:
            time.sleep(0)  # full: let the consumer run
            continue
        sent += step
    writer.write(b"")  # end marker
    if writer.publish():
        ringer.ring(bell)
    ringer.close()
    del writer
    segment.close()


def run_queue(count: int, batched: bool) -> float:
    context = multiprocessing.get_context("forkserver")
    queue = context.Queue(maxsize=10_000)
    process = context.Process(target=_queue_producer, args=(queue, count, batched))
    process.start()
    first = queue.get()
    started = time.perf_counter()
    got = len(first) if batched else 1
    while True:
        item = queue.get()
        if item is None:
            break
        got += len(item) if batched else 1
    elapsed = time.perf_counter() - started
    process.join()
    assert got == count, (got, count)
    return (count - (BATCH if batched else 1)) / elapsed


def run_ring(count: int, batched: bool) -> float:
    # Loaded here: somasync never imports the multiprocess runtime at import time.
    from somasync.workers import shm
    from somasync.workers.doorbell import Doorbell
    from somasync.workers.ring import RingReader, ring_size

    segment = shm.create(ring_size(CAPACITY), "bench")
    bell_name = f"{shm.PREFIX}bench-{os.getpid()}"
    doorbell = Doorbell(bell_name)
    try:
        assert segment.buf is not None
        reader = RingReader(segment.buf)
        context = multiprocessing.get_context("forkserver")
        process = context.Process(target=_ring_producer,
                                  args=(segment.name, bell_name, count, batched))
        process.start()
        got = 0
        started = 0.0
        done = False
        while not done:
            reader.set_sleeping(False)
            records = reader.read()
            if not records:
                reader.set_sleeping(True)
                if not reader.used:
                    select.select([doorbell], [], [], 1.0)
                    doorbell.clear()
                continue
            if not started:
                started = time.perf_counter()
            for record in records:
                if not record:
                    done = True
                    break
                if batched:
                    offset = 0
                    while offset < len(record):  # unpack, as a real consumer must
                        (length,) = _LEN.unpack_from(record, offset)
                        offset += 4 + length
                        got += 1
                else:
                    got += 1
        elapsed = time.perf_counter() - started
        process.join()
        del reader
        assert got == count, (got, count)
        first = BATCH if batched else 1
        return (count - first) / elapsed
    finally:
        doorbell.close()
        segment.close()
        segment.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/ring.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    count = args.records - args.records % BATCH
    modes: dict[str, Callable[[], float]] = {
        "queue/record": lambda: run_queue(count, False),
        "queue/batch": lambda: run_queue(count, True),
        "ring/record": lambda: run_ring(count, False),
        "ring/batch": lambda: run_ring(count, True),
    }
    rates: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.trials):
        for name, run in modes.items():
            rates[name].append(run())
    print(f"{count} records of {RECORD} B, producer process -> consumer process, "
          f"{args.trials} trials (median, min-max), records/s:")
    summary: dict[str, object] = {
        "machine": machine_info(),
        "records": count, "record_bytes": RECORD, "rates": rates,
    }
    base_record = statistics.median(rates["queue/record"])
    base_batch = statistics.median(rates["queue/batch"])
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"  {name:<13} {median:>12,.0f}  ({min(values):,.0f}-{max(values):,.0f})"
              f"  x{median / base_record:5.1f} vs queue/record"
              f"  x{median / base_batch:5.2f} vs queue/batch")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
