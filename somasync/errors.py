"""The one exception tree of SomaSync.

Everything SomaSync raises on purpose derives from :class:`SomaSyncError`. Errors of
third-party libraries (orjson, PyNaCl, struct, UTF-8 decoding) are translated at the
boundary where they occur, so callers never need to know which library sits underneath.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataDirError",
    "DecodeError",
    "DeliveryFailedError",
    "KeyFileError",
    "MessageTooLargeError",
    "NodeStateError",
    "QueryLimitError",
    "SignatureError",
    "SomaSyncError",
    "TransportError",
]


class SomaSyncError(Exception):
    """Base class of every error SomaSync raises on purpose."""


class ConfigError(SomaSyncError, ValueError):
    """A configuration value is invalid.

    Attributes:
        field: the name of the offending field, e.g. ``"gossip.fanout"``.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class DecodeError(SomaSyncError):
    """Bytes from the network are not a valid SomaSync frame or message.

    The decoder raises exactly this type for any malformed input, whatever the cause.

    Attributes:
        reason: a short machine-readable reason, e.g. ``"oversize"`` or ``"truncated"``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class KeyFileError(SomaSyncError):
    """A key, allowlist, certificate or revocation file cannot be used (missing, readable
    by other users, malformed).

    Attributes:
        path: the file.
    """

    def __init__(self, path: object, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = str(path)


class DataDirError(SomaSyncError):
    """A node's data directory cannot be used: it cannot be created or locked, another
    node holds it, or what it keeps is unreadable (a node never silently starts afresh,
    which would deliver old messages again).

    Attributes:
        path: the directory or file at fault.
    """

    def __init__(self, path: object, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = str(path)


class MessageTooLargeError(SomaSyncError, ValueError):
    """A message is larger than one frame may be (``GossipConfig.max_frame``), or a
    payload larger than a bundle may be (``NodeConfig.max_bundle_bytes``): refused at the
    sender, since every receiver with that limit would refuse it.

    Attributes:
        size: the message's frame (or the payload), in bytes.
        limit: the largest allowed, in bytes.
        setting: the setting that sets the limit.
    """

    def __init__(self, size: int, limit: int, setting: str = "gossip.max_frame") -> None:
        super().__init__(f"the message takes {size:,} bytes, more than {setting} "
                         f"({limit:,} bytes)")
        self.size = size
        self.limit = limit
        self.setting = setting


class SignatureError(SomaSyncError):
    """A signature is present but does not match the signed bytes (forged or tampered)."""


class TransportError(SomaSyncError):
    """A network operation failed (bind, connect, write)."""


class NodeStateError(SomaSyncError):
    """An operation is not valid in the node's current state (e.g. broadcast before start)."""


class DeliveryFailedError(SomaSyncError):
    """A direct message (:meth:`SynapseNode.send_message`) was not acknowledged: its
    target is unknown, unreachable, or did not answer in time.

    Attributes:
        node_id: the target, as the caller named it.
        reason: why, in words.
    """

    def __init__(self, node_id: str, reason: str) -> None:
        super().__init__(f"direct message to {node_id!r} failed: {reason}")
        self.node_id = node_id
        self.reason = reason


class QueryLimitError(SomaSyncError):
    """A query cannot be opened: as many as a node keeps open are open already."""
