"""Load tests and benchmarks that run real SomaSync nodes: ``python -m somasync.bench``.

The main job starts a mesh of node processes on 127.0.0.1, drives it with publisher
processes, and reports delivered messages/s, publish-to-delivery latency at every node,
loss and duplicates (both must be 0), CPU and memory per process and bytes on the wire,
against the raw single-core PyNaCl verify rate measured in the same run. Use it from
code too::

    import uvloop
    from somasync.bench import BenchSettings, run_bench

    result = uvloop.run(run_bench(BenchSettings(nodes=3, rate=200, duration=2)))
    assert result["ok"]

The result is a JSON-ready dict described by ``schema.json`` beside this module.
"""

from somasync.bench.histogram import LatencyHistogram as LatencyHistogram
from somasync.bench.runner import (
    BenchError as BenchError,
    Progress as Progress,
    run_bench as run_bench,
)
from somasync.bench.settings import (
    PRESETS as PRESETS,
    SCENARIOS as SCENARIOS,
    BenchSettings as BenchSettings,
)

__all__ = ["PRESETS", "SCENARIOS", "BenchError", "BenchSettings", "LatencyHistogram",
           "Progress", "run_bench"]
