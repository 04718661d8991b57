"""A TCP proxy on 127.0.0.1 in front of the S3 test server, to cause real outages without losing the server's data:
`down()` closes the listening socket and every open connection (clients then see resets and refused connections),
`up()` listens on the same port again, `cut_uploads_after(n)` resets the connection that carries the n-th byte sent
upstream from now on (an upload that dies half-way), and with `then_down=True` the whole server goes away with it."""

from __future__ import annotations

import socket
import threading


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
        self.cuts = 0
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

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
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
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
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
