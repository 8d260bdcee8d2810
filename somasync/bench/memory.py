"""Bytes per remembered thing: per seen id, per stored message, per stream.

A node's memory after its first minutes is its baseline plus what it remembers, and each
of those is bounded by configuration. This measures, with ``tracemalloc`` on the real
core structures, what one more entry costs:

* **seen id**: one message id in the seen cache (the 16-byte id object included);
* **stored message**: one message in the catch-up store *beyond its frame* (the id, the
  bookkeeping and the per-stream index), with the frame's own size beside it;
* **stream**: one origin a node tracks (its sequence intervals, its place in the store
  index and its broadcast-tree state with two pruned links), beyond its messages.

Then it predicts the plateau of a node that receives ``--rate`` messages/s of ``--size``
bytes under the library's defaults, from the formula in the config docs::

    remembered = min(seen_cache_size, rate x seen_ttl) x seen_id
               + min(max_stored_messages, rate x max_age) x (stored_message + frame)
               + streams x stream

Each structure is measured at the size the defaults give it (a hash table's cost per
entry steps with its size): ``seen_cache_size`` ids, ``max_stored_messages`` messages,
1,000 streams. Median and min-max over ``--trials``.

    python -m somasync.bench memory [--rate 1000] [--size 256] [--trials 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

from somasync.config import GossipConfig
from somasync.core import wire
from somasync.core.antientropy import MessageStore, StreamTable
from somasync.core.broadcast import BroadcastTree
from somasync.core.seen import SeenCache

__all__ = ["main", "measure", "predict_plateau"]

WALL = 1_700_000_000.0


def _envelope(sequence: int, *, origin: bytes, source: str, size: int) -> wire.Envelope:
    body = wire.encode_envelope(origin=origin, sequence=sequence,
                                timestamp_ms=int(WALL * 1000), ttl=3600, priority=128,
                                payload_kind=0, source=source, correlation_id=None,
                                headers={}, payload=bytes(size))
    return wire.decode_envelope(body, bytes(64))


def _traced(build: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes still allocated by ``build`` once it returns (what it keeps alive)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, kept
    finally:
        tracemalloc.stop()


def _seen_id(entries: int) -> float:
    def build() -> SeenCache:
        cache = SeenCache(entries, 600.0)
        for n in range(entries):
            # Fresh id objects, stamped 1 ms apart as a busy node would see them.
            cache.add(n.to_bytes(16, "big"), now=n * 0.001)
        return cache
    size, _ = _traced(build)
    return size / entries


def _stored_message(entries: int, size: int) -> tuple[float, float]:
    origin = bytes(range(32))
    envelopes = [_envelope(n, origin=origin, source="bench", size=size)
                 for n in range(1, entries + 1)]

    def build() -> MessageStore:
        store = MessageStore(entries, 3600.0)
        for envelope in envelopes:
            store.add(envelope, now=0.0, wall_now=WALL)
        return store
    total, store = _traced(build)
    frames = 0
    for envelope in envelopes[:100]:
        held = store.get(envelope.id)
        assert held is not None
        frames += sys.getsizeof(held[0])
    frame = frames / 100
    # The envelopes (and so their ids) existed before; a node keeps only the store's
    # copy of each id, so count one id object per message.
    return (total - frame * entries) / entries + sys.getsizeof(envelopes[0].id), frame


def _stream(entries: int) -> float:
    keys = [(n.to_bytes(32, "big"), f"origin-{n}") for n in range(entries)]
    tags = [wire.stream_tag(origin, source.encode()) for origin, source in keys]
    envelopes = [_envelope(1, origin=origin, source=source, size=0) for origin, source in keys]

    def build() -> tuple[StreamTable, MessageStore, BroadcastTree]:
        table = StreamTable(entries)
        store = MessageStore(entries, 3600.0)
        tree = BroadcastTree(lazy_timeout=0.25, graft_retry=0.5, max_missing=16,
                             max_trees=entries)
        tree.link_up(1)
        tree.link_up(2)
        for key, tag, envelope in zip(keys, tags, envelopes, strict=True):
            table.add(key, 1, now=0.0)
            store.add(envelope, now=0.0, wall_now=WALL)
            tree.make_lazy(1, tag)
            tree.make_lazy(2, tag)
        return table, store, tree
    total, _ = _traced(build)
    # Take away the one message each stream's store index holds (its bookkeeping and
    # frame; its id object existed before and was not traced), and add the objects a
    # node creates once per stream but this measurement made beforehand: the key's
    # origin and source, and the tree's stream tag.
    one_message, _ = _stored_message(min(entries, 2000), 0)
    id_object = sys.getsizeof(envelopes[0].id)
    frame = sys.getsizeof(wire.encode_message_frame(envelopes[0], hops=0, repair=True))
    per_stream_keys = (sys.getsizeof(keys[0][0]) + sys.getsizeof(keys[0][1])
                       + sys.getsizeof(tags[0]))
    return total / entries - (one_message - id_object) - frame + per_stream_keys


def measure(config: GossipConfig, size: int, trials: int) -> dict[str, Any]:
    """Bytes per entry of each structure at the sizes ``config`` gives them, median and
    min-max over ``trials``."""
    runs: dict[str, list[float]] = {"seen_id": [], "stored_message": [], "frame": [],
                                    "stream": []}
    for _ in range(trials):
        runs["seen_id"].append(_seen_id(config.seen_cache_size))
        stored, frame = _stored_message(max(1000, config.max_stored_messages), size)
        runs["stored_message"].append(stored)
        runs["frame"].append(frame)
        runs["stream"].append(_stream(1000))
    return {name: {"median": round(statistics.median(values), 1),
                   "min": round(min(values), 1), "max": round(max(values), 1)}
            for name, values in runs.items()}


def predict_plateau(per_entry: dict[str, Any], *, rate: float, streams: int,
                    config: GossipConfig) -> dict[str, float]:
    """What a node remembers at steady state under ``config`` (bytes), by structure."""
    seen = min(config.seen_cache_size, rate * config.seen_ttl)
    stored = min(config.max_stored_messages, rate * config.max_message_age)
    return {
        "seen_ids": seen,
        "stored_messages": stored,
        "seen_bytes": seen * per_entry["seen_id"]["median"],
        "store_bytes": stored * (per_entry["stored_message"]["median"]
                                 + per_entry["frame"]["median"]),
        "stream_bytes": min(streams, config.max_streams) * per_entry["stream"]["median"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m somasync.bench memory",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="payload bytes (256)")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="messages/s for the plateau prediction (1000)")
    parser.add_argument("--streams", type=int, default=10,
                        help="origins for the plateau prediction (10)")
    parser.add_argument("--trials", type=int, default=3, help="trials (3)")
    parser.add_argument("--json", metavar="PATH", help="write the result as JSON")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.size < 0 or args.rate <= 0 or args.streams < 0:
        parser.error("--trials must be >= 1, --size and --streams >= 0, --rate > 0")
    config = GossipConfig.lan()
    per_entry = measure(config, args.size, args.trials)
    plateau = predict_plateau(per_entry, rate=args.rate, streams=args.streams, config=config)
    print(f"bytes per entry at the default sizes ({args.trials} trials, median [min-max]), "
          f"Python {sys.version.split()[0]}:")
    labels = {"seen_id": "seen id (id object included)",
              "stored_message": "stored message beyond its frame",
              "frame": f"  its frame ({args.size} B payload)",
              "stream": "stream (tracker, store index, tree)"}
    for name, label in labels.items():
        row = per_entry[name]
        print(f"  {label:<36} {row['median']:>8.1f}  [{row['min']:.1f}-{row['max']:.1f}]")
    total = plateau["seen_bytes"] + plateau["store_bytes"] + plateau["stream_bytes"]
    print(f"remembered at {args.rate:g} msg/s with GossipConfig.lan() "
          f"(seen_cache_size {config.seen_cache_size:,}, seen_ttl {config.seen_ttl:g} s, "
          f"max_stored_messages {config.max_stored_messages:,}, max_message_age "
          f"{config.max_message_age:g} s):")
    print(f"  seen cache {plateau['seen_ids']:,.0f} ids = {plateau['seen_bytes'] / 2**20:.1f} "
          f"MiB; store {plateau['stored_messages']:,.0f} messages = "
          f"{plateau['store_bytes'] / 2**20:.1f} MiB; {args.streams} streams = "
          f"{plateau['stream_bytes'] / 2**20:.2f} MiB; total {total / 2**20:.1f} MiB "
          "above the node's baseline")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"per_entry_bytes": per_entry, "settings": vars(args),
                       "plateau": plateau}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
