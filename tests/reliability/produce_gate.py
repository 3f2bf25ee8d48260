"""A TCP proxy in front of the broker that can refuse one client's produce requests while it passes everything else:
the fault "producing fails while consuming works" (an ACL change, an alerts topic without a leader) on a real broker.

The broker advertises the proxy's port, so every connection a client opens after bootstrap goes through it. The proxy
reads the Kafka request frames (a 4-byte size, then api_key, api_version, correlation_id and the client id) and, while
refusing, closes a connection that sends a Produce request (api_key 0) under the refused client id: the client sees
a broken connection and retries, as with a broker that stopped taking its writes. Responses pass through unread.
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Optional

from streamdet.io.broker import free_port

PRODUCE = 0


class ProduceGate:
    """`with ProduceGate(broker_port, "client-id") as gate:` start a broker advertising `gate.port`, then
    `gate.refuse()` / `gate.allow()`; `gate.refused` counts the produce requests it refused."""

    def __init__(self, upstream_port: int, client_id: str):
        self.port = free_port()
        self.upstream = ("127.0.0.1", upstream_port)
        self.client_id = client_id.encode()
        self.refused = 0
        self._refusing = threading.Event()
        self._listener: Optional[socket.socket] = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def refuse(self) -> None:
        self._refusing.set()

    def allow(self) -> None:
        self._refusing.clear()

    def __enter__(self) -> "ProduceGate":
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, name="produce-gate", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _close(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed: the gate is done
                return
            try:
                broker = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            broker.settimeout(None)
            with self._lock:
                self._sockets += [client, broker]
            threading.Thread(target=self._requests, args=(client, broker), daemon=True).start()
            threading.Thread(target=_pipe, args=(broker, client), daemon=True).start()

    def _requests(self, client: socket.socket, broker: socket.socket) -> None:
        """Client -> broker, one request frame at a time."""
        try:
            while True:
                size = _read(client, 4)
                frame = _read(client, struct.unpack(">i", size)[0])
                if self._refusing.is_set() and self._is_refused(frame):
                    self.refused += 1
                    break
                broker.sendall(size + frame)
        except OSError:
            pass
        _close(client)
        _close(broker)

    def _is_refused(self, frame: bytes) -> bool:
        """A Produce request whose header names the refused client id (request headers v1 and v2 both carry it as
        an int16-length string after api_key, api_version and correlation_id)."""
        api_key, = struct.unpack_from(">h", frame, 0)
        if api_key != PRODUCE or len(frame) < 10:
            return False
        length, = struct.unpack_from(">h", frame, 8)
        return length >= 0 and frame[10:10 + length] == self.client_id


def _read(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 16))
        if not chunk:
            raise ConnectionError("closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(1 << 16):
            sink.sendall(chunk)
    except OSError:
        pass
    _close(source)
    _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
