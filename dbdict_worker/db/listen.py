"""Waking an idle worker when jobs become ready: LISTEN on a dedicated PostgreSQL connection.

The store sends one NOTIFY per enqueue (or requeue) transaction, with the table name as the
payload. :class:`Listener` runs in its own thread with its own connection (never one of the
pool's) and calls ``on_event(channel, payload)`` for each notification; after a lost
connection it reconnects with backoff and reports ``("", "reconnected")`` so the worker polls
once for what it may have missed. Workers behind a pooler that drops LISTEN use polling only
(``--poll-only``).
"""
from __future__ import annotations

import logging
import random
import select
import threading
from typing import Callable, Sequence

import psycopg2
import psycopg2.extensions
from sqlalchemy.engine import URL

log = logging.getLogger("dbdict_worker")

RECONNECTED = "reconnected"


class Listener(threading.Thread):
    """LISTEN on ``channels`` until :meth:`stop`; see the module docstring."""

    def __init__(self, url: URL, channels: Sequence[str],
                 on_event: Callable[[str, str], None]) -> None:
        super().__init__(name="dbdict-listener", daemon=True)
        self._params = url.translate_connect_args(username="user", database="dbname")
        self._params.update({k: v for k, v in url.query.items() if isinstance(v, str)})
        self._params.setdefault("connect_timeout", 10)
        # A silently dead network must end the connection too, not leave it waiting forever.
        self._params.update(keepalives=1, keepalives_idle=30, keepalives_interval=10,
                            keepalives_count=3)
        self._params["application_name"] = "dbdict-worker-listen"
        self.channels = list(channels)
        self.on_event = on_event
        self._stop = threading.Event()
        #: Set once the first LISTEN is in place (tests wait on it instead of sleeping).
        self.listening = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        delay = 0.5
        first = True
        while not self._stop.is_set():
            try:
                conn = psycopg2.connect(**self._params)
            except psycopg2.Error:
                self._stop.wait(delay * (0.5 + random.random()))
                delay = min(delay * 2, 15.0)
                continue
            delay = 0.5
            try:
                conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
                with conn.cursor() as cur:
                    for channel in self.channels:
                        cur.execute(f"LISTEN {channel}")  # our own constant channel names
                if first:
                    log.info("listening for new jobs (LISTEN %s)", ", ".join(self.channels))
                self.listening.set()
                if not first:
                    self.on_event("", RECONNECTED)
                first = False
                self._listen(conn)
            except psycopg2.Error as e:
                log.debug("listener connection lost: %s", e)
            finally:
                try:
                    conn.close()
                except psycopg2.Error:
                    pass

    def _listen(self, conn) -> None:  # noqa: ANN001
        while not self._stop.is_set():
            ready, _, _ = select.select([conn], [], [], 1.0)
            if not ready:
                continue
            conn.poll()
            while conn.notifies:
                note = conn.notifies.pop(0)
                self.on_event(note.channel, note.payload)
