"""A TCP proxy on loopback that a test can cut, to make a real dependency unreachable, or
make answer like an overloaded S3 (503 SlowDown)."""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to a target until :meth:`cut`, again after :meth:`restore`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._throttled = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """Drop every connection and refuse new ones (they are closed at once)."""
        self._open.clear()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def throttle(self) -> None:
        """Answer every request ``503 SlowDown`` as an overloaded S3 does, until
        :meth:`restore`; open connections are dropped so that clients reconnect."""
        self._throttled.set()
        self.cut()
        self._open.set()

    def restore(self) -> None:
        self._throttled.clear()
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            if self._throttled.is_set():
                threading.Thread(target=_slow_down, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._sockets.discard(src)
                self._sockets.discard(dst)


_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


def _slow_down(client: socket.socket) -> None:
    """Read one request's head and answer it as S3 does when it throttles."""
    with client:
        client.settimeout(5)
        received = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in received and (chunk := client.recv(65536)):
                received += chunk
            head = (
                b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(_SLOW_DOWN)
            )
            client.sendall(head + _SLOW_DOWN)
