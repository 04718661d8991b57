"""A TCP proxy on 127.0.0.1 in front of the S3 test server, to cause real outages without losing the server's data:
`down()` closes the listening socket and every open connection (clients then see resets and refused connections),
`up()` listens on the same port again, `cut_uploads_after(n)` resets the connection that carries the n-th byte sent
upstream from now on (an upload that dies half-way), and with `then_down=True` the whole server goes away with it.
`answer_with(status, ...)` makes the proxy itself answer every request for a while, as a load balancer in front of a
restarting store does (502/503), or a gateway that refuses the client (403). `lose_answers(n)` lets the next n
requests reach the server and resets the connection instead of passing the server's answer back (a write that
landed, its answer lost on the way). `slow_down(seconds)` holds every request
that long before passing it on (an overloaded store or a congested link); `requests` records when each request was
passed on and its request line, so a test can tell in which order a client's calls reached the store."""

from __future__ import annotations

import socket
import threading
import time


class FlakyProxy:
    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._cut_after: int | None = None
        self._down_after_cut = False
        self._answer: tuple[bytes, float] | None = None  # response, seconds
        self._answer_until: float | None = None
        self._delay = 0.0
        self._lose = 0
        self.cuts = 0
        self.answered = 0
        self.requests: list[tuple[float, str]] = []  # (time.time() when passed on, request line)
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            listener.close()
        for c in conns:
            _close(c)

    def cut_uploads_after(self, n_bytes: int | None, then_down: bool = False) -> None:
        self._cut_after, self._down_after_cut = n_bytes, then_down

    def lose_answers(self, n: int) -> None:
        self._lose = n

    def slow_down(self, seconds: float) -> None:
        self._delay = seconds

    def answer_with(self, status: int, reason: str, seconds: float, body: bytes = b"",
                    content_type: str = "text/html") -> None:
        """Answer every request with this response instead of passing it on, for `seconds` from the first request
        it meets (so an outage always meets the client). Open connections are closed, so that every request from
        now on meets it."""
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        with self._lock:
            self._answer, self._answer_until = (head + body, seconds), None
            conns, self._conns = self._conns, []
        for c in conns:
            try:  # wakes the pipe threads blocked in recv(), which a close() from here would not
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            _close(c)

    def _respond(self, client: socket.socket, response: bytes) -> None:
        """Read the whole request (headers and the body its Content-Length announces), then answer and close."""
        try:
            data = b""
            while b"\r\n\r\n" not in data and (chunk := client.recv(65536)):
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(body) < length and (chunk := client.recv(65536)):
                body += chunk
            client.sendall(response)
            with self._lock:
                self.answered += 1
        except OSError:
            pass
        client.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            with self._lock:
                if self._answer is not None and self._answer_until is None:
                    self._answer_until = time.monotonic() + self._answer[1]
                if self._answer is not None and time.monotonic() >= self._answer_until:
                    self._answer = None
                answer = self._answer
            if answer is not None:
                threading.Thread(target=self._respond, args=(client, answer[0]), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:
                    _close(client), _close(upstream)
                    return
                self._conns += [client, upstream]
            answered = threading.Event()  # the server answered: the client's next bytes start its next request
            answered.set()
            threading.Thread(target=self._pipe, args=(client, upstream, True, answered), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False, answered), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool, answered: threading.Event) -> None:
        try:
            while data := src.recv(65536):
                if not upstream:
                    with self._lock:
                        lose, self._lose = self._lose > 0, max(0, self._lose - 1)
                    if lose:  # a reset (linger 0), and a shutdown that wakes the other pipe's recv()
                        dst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        dst.shutdown(socket.SHUT_RDWR)
                        break
                    answered.set()
                elif answered.is_set():  # a new request (HTTP/1.1: one at a time per connection)
                    answered.clear()
                    time.sleep(self._delay)
                    with self._lock:
                        self.requests.append((time.time(), data.split(b"\r\n", 1)[0].decode("latin-1")))
                with self._lock:
                    budget = self._cut_after if upstream else None
                    if budget is not None:
                        self._cut_after = budget - len(data) if len(data) < budget else None
                if budget is not None and len(data) >= budget:
                    self.cuts += 1
                    dst.sendall(data[:budget])
                    if self._down_after_cut:
                        self.down()
                    break
                dst.sendall(data)
        except OSError:
            pass
        _close(src), _close(dst)

def _close(s: socket.socket) -> None:
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset, not FIN
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
