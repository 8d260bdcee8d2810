"""The multiprocess runtime of SomaSync, installed as ``somasync.workers``.

A supervisor shards a node's peers across worker processes joined by shared-memory
rings. Import it as ``somasync.workers``; the source folder is never a top-level package.
"""

__all__: list[str] = []
