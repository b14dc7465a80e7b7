"""Signal handlers installed for a while and then put back.

Every handler in this package only sets a flag or bumps a counter; the code that owns the
flag acts on it from its own loop, because almost nothing (logging, locks, database calls) is
safe inside a signal handler. Installing through :func:`handling` keeps the previous handlers
and restores them on the way out, so a supervisor, a local run or a channel can be used
in-process (in a test, or in a notebook) without leaving their handlers behind.
"""
from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Mapping, Union

#: What a handler may be: a callable taking (signum, frame), or SIG_IGN / SIG_DFL.
Handler = Union[Callable[[int, Any], Any], int, signal.Handlers]


def install(handlers: Mapping[int, Handler]) -> dict[int, Handler]:
    """Install ``handlers`` ({signal: handler}); returns the previous ones, for
    :func:`restore`."""
    previous: dict[int, Handler] = {}
    for sig, handler in handlers.items():
        previous[sig] = signal.signal(sig, handler)
    return previous


def restore(previous: Mapping[int, Handler]) -> None:
    """Put back handlers returned by :func:`install`."""
    for sig, handler in previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


@contextmanager
def handling(handlers: Mapping[int, Handler]) -> Iterator[None]:
    """Within the block, ``handlers`` ({signal: handler}) are installed; after it, the previous
    ones are back (also when the block raises)."""
    previous = install(handlers)
    try:
        yield
    finally:
        restore(previous)


def same_handler(signals: Iterable[int], handler: Handler) -> dict[int, Handler]:
    """``{sig: handler for sig in signals}``: one handler for several signals."""
    return {sig: handler for sig in signals}
