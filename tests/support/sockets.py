"""Socket helpers of the loopback servers in this package: a listener, clean closes and resets."""
from __future__ import annotations

import socket
import struct


def listen(backlog: int) -> socket.socket:
    """A TCP listener on ``127.0.0.1`` and a free port (``getsockname()[1]``)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    return listener


def shutdown(sock: socket.socket) -> None:
    """``shutdown(SHUT_RDWR)``, errors ignored: a thread blocked on the socket wakes up at once."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def close(sock: socket.socket) -> None:
    """Close cleanly (FIN)."""
    shutdown(sock)
    try:
        sock.close()
    except OSError:
        pass


def reset(sock: socket.socket, *, wake: bool = False) -> None:
    """Close with an RST (SO_LINGER 0): the peer sees 'connection reset', not a clean close.

    Without ``wake`` nothing goes before the RST. With it, the socket is shut down first, so that a
    thread blocked reading it wakes up at once (closing alone does not wake it).
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    if wake:
        shutdown(sock)
    try:
        sock.close()
    except OSError:
        pass
