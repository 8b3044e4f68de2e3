"""A stable address in front of a local serving process that scales to zero, as Knative's
activator stands in front of a revision scaled to zero: a request that arrives with no process
is held while one is asked for and starts, and goes through once it is ready; the address never
changes across scale-downs, so a deployment's endpoint stays the same.

It is a byte pipe (the local app speaks plain HTTP on loopback): it reads nothing of the
requests, and counts only what goes through, for how long the deployment has been idle. While
the deployment may not run at all (its budget spent), it answers 503 with the reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger("loraplane.local.activator")

# How long a request may wait for a process to start from zero before it is answered 503.
COLD_START_SECONDS = 300.0


class Activator:
    def __init__(
        self,
        name: str,
        port: int,
        *,
        upstream: Callable[[], int | None],
        demand: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        cold_start_seconds: float = COLD_START_SECONDS,
    ) -> None:
        """``upstream``: the ready process's port, or None; ``demand``: ask for a process now
        (wake the deployment's reconcile pass)."""
        self.name, self.upstream, self.demand, self.clock = name, upstream, demand, clock
        self.cold_start_seconds = cold_start_seconds
        self.server = socket.create_server(("127.0.0.1", port))
        self.port = self.server.getsockname()[1]
        self.refusal: str | None = None  # while set, every request is answered 503 with it
        self._lock = threading.Lock()
        self._open = 0  # connections going through
        self._waiting = 0  # connections waiting for a process
        self._last = clock()
        self._sockets: set[socket.socket] = set()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name=f"activator-{name}", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def idle_for(self) -> float | None:
        """Seconds since anything went through (None: something is going through, or waits)."""
        with self._lock:
            return None if self._open or self._waiting else self.clock() - self._last

    def demanded(self) -> bool:
        """A request waits for a process."""
        with self._lock:
            return self._waiting > 0

    def close(self) -> None:
        self._closed.set()
        self.server.close()
        with self._lock:
            ends, self._sockets = list(self._sockets), set()
        for end in ends:
            with contextlib.suppress(OSError):
                end.close()

    # ------------------------------------------------------------------------------ the pipe

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        refusal = self.refusal
        if refusal is not None:
            self._answer(client, 503, refusal)
            return
        port = self.upstream()
        if port is None:
            port = self._wait_for_process()
            if port is None:
                self._answer(client, 503, f"the serving process of {self.name} did not start within {self.cold_start_seconds:.0f}s")
                return
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            self._answer(client, 503, f"the serving process of {self.name} is not answering; try again")
            return
        upstream.settimeout(None)
        with self._lock:
            self._open += 1
            self._last = self.clock()
            self._sockets.update((client, upstream))
        ends = threading.Event()
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(source, sink, ends), daemon=True).start()

    def _wait_for_process(self) -> int | None:
        """Hold the request: ask for a process, and wait for it to be ready."""
        with self._lock:
            self._waiting += 1
        try:
            log.info("%s: a request waits for the serving process to start from zero", self.name)
            self.demand()
            deadline = self.clock() + self.cold_start_seconds
            while not self._closed.is_set():
                port = self.upstream()
                if port is not None:
                    return port
                if self.clock() >= deadline:
                    return None
                self._closed.wait(0.1)
            return None
        finally:
            with self._lock:
                self._waiting -= 1
                self._last = self.clock()

    def _pipe(self, source: socket.socket, sink: socket.socket, ends: threading.Event) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
                with self._lock:
                    self._last = self.clock()
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with self._lock:
                    self._sockets.discard(end)
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()
            if ends.is_set():  # the second direction to end closes the connection
                with self._lock:
                    self._open -= 1
                    self._last = self.clock()
            ends.set()

    @staticmethod
    def _answer(client: socket.socket, status: int, message: str) -> None:
        """An answer of the activator's own, in the serving app's error shape (OpenAI's)."""
        body = json.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": "not_ready"}}).encode()
        head = (
            f"HTTP/1.1 {status} Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "retry-after: 10\r\nconnection: close\r\n\r\n"
        ).encode()
        with contextlib.suppress(OSError):
            client.recv(65536)  # the request, read so the client sees the answer, not a reset
            client.sendall(head + body)
        client.close()
