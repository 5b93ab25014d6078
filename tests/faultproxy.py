"""A small TCP proxy on 127.0.0.1 that puts faults between a client and Azurite.

Real sockets and the real SDK retry and timeout code see the fault, not a mocked client. Requests are
counted on the client→server stream by their HTTP/1.1 request lines (storage clients speak HTTP/1.1
over keep-alive connections, so connections would undercount). After `fail_after(n)` the (n+1)-th
request is never forwarded: its connection is reset and every new connection is reset on accept
(what a client sees from a storage front end that went away), until `heal()`. `delay` holds every
request for that long before forwarding it (slow storage). Every thread stops by itself at `close()`
or when `lifetime` seconds have passed, whichever comes first.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from types import TracebackType

_REQUEST_LINE = b" HTTP/1.1\r\n"
_POLL = 0.05


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a dropped connection looks to the peer."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    def __init__(self, target_port: int, lifetime: float = 120.0) -> None:
        self.target_port = target_port
        self.requests = 0
        self.connections = 0
        self.delay = 0.0
        self._budget: int | None = None
        self._deadline = time.monotonic() + lifetime
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL)
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name="faultproxy-accept").start()

    @property
    def tripped(self) -> bool:
        return self._budget is not None and self.requests >= self._budget

    def fail_after(self, requests: int) -> None:
        """Let `requests` more requests through, then cut and refuse until `heal()`."""
        with self._lock:
            self._budget = self.requests + requests

    def heal(self) -> None:
        with self._lock:
            self._budget = None
            self.delay = 0.0

    def close(self) -> None:
        self._closed.set()
        _reset(self._listener)
        with self._lock:
            for sock in list(self._sockets):
                _reset(sock)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _running(self) -> bool:
        return not self._closed.is_set() and time.monotonic() < self._deadline

    def _accept(self) -> None:
        while self._running():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            if self.tripped:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True,
                             name="faultproxy-pump").start()

    def _admit(self, chunk: bytes) -> bool:
        """Count the requests starting in this chunk; False when one of them is over the budget."""
        starting = chunk.count(_REQUEST_LINE)
        if not starting:
            return True
        with self._lock:
            if self._budget is not None and self.requests + starting > self._budget:
                self.requests = max(self.requests, self._budget)
                return False
            self.requests += starting
            delay = self.delay
        if delay:
            time.sleep(delay)
        return True

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        """Both directions of one connection in one thread, until either side closes or a fault."""
        peers = {client: upstream, upstream: client}
        try:
            while self._running():
                readable, _, _ = select.select(list(peers), [], [], _POLL)
                for source in readable:
                    chunk = source.recv(65536)
                    if not chunk or (source is client and not self._admit(chunk)):
                        return
                    peers[source].sendall(chunk)
        except OSError:
            return
        finally:
            _reset(client)
            _reset(upstream)
            with self._lock:
                self._sockets.difference_update((client, upstream))
