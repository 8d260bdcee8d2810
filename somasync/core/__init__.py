"""The sans-IO protocol core: bytes, ``now`` and an injected ``random.Random`` in; frames
to send, deliveries, events and the next deadline out. No asyncio, sockets, processes,
wall clock or global randomness (held by ``core/ruff.toml`` and ``tests/test_layering.py``).
"""
