"""A TCP forwarder between a test's clients and its PostgreSQL that the test can cut: the
network between one worker and the database, failing (connections dropped, new ones closed at
once; or, silently, bytes that stop flowing on sockets that stay open, like a pulled cable)
and healing."""
from __future__ import annotations

import socket
import threading

from sqlalchemy.engine import make_url


class Proxy:
    """A TCP forwarder on 127.0.0.1 to the test's PostgreSQL, which the test can cut (every
    connection through it dropped, new ones closed as soon as they are accepted) and
    restore."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.upstream = (parsed.host or "127.0.0.1", parsed.port or 5432)
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.url = parsed.set(host="127.0.0.1", port=self._server.getsockname()[1])\
            .render_as_string(hide_password=False)
        self._lock = threading.Lock()
        self._open = True
        self._closed = False
        self._sockets: set[socket.socket] = set()
        self._flowing = threading.Event()
        self._flowing.set()
        self._held: list[socket.socket] = []  # accepted during a silent cut, never answered
        threading.Thread(target=self._accept, name="proxy", daemon=True).start()

    def cut(self, *, silent: bool = False) -> None:
        """Drop every connection and refuse new ones; ``silent``: keep every socket open but
        forward nothing (what is sent is held, and delivered once restored), and never answer
        new connections, as when a cable is pulled."""
        if silent:
            self._flowing.clear()
            return
        with self._lock:
            self._open = False
            dropped, self._sockets = self._sockets, set()
        for sock in dropped:
            _drop(sock)

    def restore(self) -> None:
        with self._lock:
            self._open = True
            held, self._held = self._held, []
        self._flowing.set()
        for sock in held:  # their clients gave up long ago (connect timeout)
            _drop(sock)

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.restore()  # wakes the pumps held by a silent cut: their sockets are closed
        self._server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if not self._flowing.is_set():
                with self._lock:
                    self._held.append(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _drop(client)
                continue
            with self._lock:
                keep = self._open
                if keep:
                    self._sockets |= {client, upstream}
            if not keep:
                _drop(client)
                _drop(upstream)
                continue
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _drop(src)
            _drop(dst)


def _drop(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv() on it
    except OSError:
        pass
    sock.close()
