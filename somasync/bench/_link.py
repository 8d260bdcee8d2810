"""The client side of a node's link handshake over a blocking socket, for the bench's
load processes (they speak the wire protocol directly, as a hostile or foreign peer
would, rather than run a node)."""

from __future__ import annotations

import socket

from somasync.core.crypto import Identity
from somasync.core.handshake import Handshake, Session

__all__ = ["secure_link"]


def secure_link(sock: socket.socket, identity: Identity, node_id: str, *,
                plaintext: bool = False) -> tuple[Session, bytes]:
    """Run the handshake as the dialling side; returns the session and the record bytes
    that arrived after it (the node's first frames, to be opened next).

    Raises:
        ConnectionError: the node closed the connection during the handshake.
        DecodeError: the node's handshake was not valid.
    """
    handshake = Handshake(identity, node_id, None, dialer=True, plaintext=plaintext)
    sock.sendall(handshake.initial_bytes())
    while handshake.session is None:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the node closed the connection during the handshake")
        reply = handshake.receive(chunk)
        if reply:
            sock.sendall(reply)
    return handshake.session, handshake.leftover
