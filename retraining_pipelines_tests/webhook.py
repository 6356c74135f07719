"""A real HTTP server on 127.0.0.1 that records what is POSTed to it (for webhook tests)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextmanager
def webhook_server(status: int = 200) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def raw_server(reply: Callable[[socket.socket], None]) -> Iterator[str]:
    """A TCP server on 127.0.0.1 that answers every connection with `reply` (not HTTP, or too slowly)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_answer, args=(conn, reply), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        stop.set()
        listener.close()


def _answer(conn: socket.socket, reply: Callable[[socket.socket], None]) -> None:
    with conn:
        try:
            conn.recv(65536)
            reply(conn)
        except OSError:
            pass


def trickle(conn: socket.socket, seconds: float = 60.0, every: float = 1.5) -> None:
    """A valid HTTP answer, one byte every `every` seconds: each read succeeds, the whole never ends."""
    deadline = time.monotonic() + seconds
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
        if time.monotonic() > deadline:
            return
        conn.sendall(bytes([byte]))
        time.sleep(every)


def garbage(conn: socket.socket) -> None:
    conn.sendall(b"\x00\xffthis is not HTTP at all\r\n\r\n")
