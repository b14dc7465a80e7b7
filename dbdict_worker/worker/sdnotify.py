"""systemd's notification protocol (``Type=notify``), without a dependency: one datagram to
the socket named by ``NOTIFY_SOCKET``. Does nothing when not run by systemd."""
from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send e.g. ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=...``; False if there
    is no systemd to tell (or it cannot be reached: never an error for the worker)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError:
        return False
