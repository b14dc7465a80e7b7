"""The dashboard's guards: which addresses it binds, which Host names it answers, and the
token that its actions (cancel, requeue, set-priority) require.

Why each: the dashboard shows a sweep's parameters and, with ``--allow-actions``, changes
jobs. Bound to the loopback address it is reached from a laptop through an ssh tunnel only;
checking the Host header defeats DNS rebinding (a web page whose name turns into 127.0.0.1);
the token, sent by the page's script in a header a cross-site form cannot set, defeats
cross-site requests, and the Origin check refuses them once more."""
from __future__ import annotations

import hmac
import ipaddress
import secrets
from typing import Iterable
from urllib.parse import urlsplit

from dbdict_worker.errors import UsageError

#: The header the page's script sends the action token in.
TOKEN_HEADER = "x-dbdict-token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
_ANY = ("0.0.0.0", "::", "")


def new_token() -> str:
    """A fresh random action token (printed at start-up, never stored)."""
    return secrets.token_urlsafe(32)


def token_ok(sent: str | None, token: str) -> bool:
    """Whether ``sent`` is the action token (compared in constant time)."""
    return bool(sent) and hmac.compare_digest(sent.encode(), token.encode())


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, explicit: bool) -> str | None:
    """Refuse a non-loopback address unless it was given with ``--host``; return the warning
    to print when it was (None for a loopback address)."""
    if is_loopback(host):
        return None
    if not explicit:
        raise UsageError(f"refusing to listen on {host!r} without --host: the dashboard "
                         "binds 127.0.0.1 unless told otherwise")
    return (f"warning: listening on {host!r}: anyone who reaches this machine's port can "
            "read the jobs (prefer the default 127.0.0.1 and an ssh tunnel)")


def allowed_hosts(bind: str) -> list[str] | None:
    """The Host header names answered: the loopback names and the bound address; None (any
    name) when bound to every interface, where the user has chosen to be reachable by any
    of the machine's names."""
    if bind in _ANY:
        return None
    return sorted(set(LOOPBACK_NAMES) | {bind.strip("[]").lower()})


def host_name(header: str) -> str:
    """The name part of a Host header (``[::1]:8765`` -> ``::1``, ``a:80`` -> ``a``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_ok(header: str | None, allowed: Iterable[str] | None) -> bool:
    """Whether a request's Host header names an allowed host."""
    if allowed is None:
        return True
    return bool(header) and host_name(header) in set(allowed)


def origin_ok(origin: str | None, host: str | None) -> bool:
    """A POST's Origin, when the browser sends one, must be the page's own (same host and
    port as the Host header); a missing Origin (curl, scripts) is left to the token."""
    if not origin:
        return True
    if origin == "null" or not host:
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()
