"""What a replica tells loraplane through the share: a JSON file of its own in a folder beside
the adapter pointer, replaced whole every few seconds (a reader never sees half of one). It is
how loraplane hears from replicas it cannot reach over HTTP (internal ingress, an IP allow
list) and from every replica rather than the one ingress picks (usage per key)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("loraplane.serving.reports")


def replica_name() -> str:
    """Container Apps names each replica (CONTAINER_APP_REPLICA_NAME); elsewhere, host and pid."""
    return os.environ.get("CONTAINER_APP_REPLICA_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def _private_folders(folder: Path) -> None:
    """``folder`` and any missing parent, each for this user only (0700), as loraplane makes its
    own folders on the share: a replica may report before loraplane first writes there."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for level in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another replica made it meanwhile
            os.mkdir(level, 0o700)


class ShareReport:
    """Every ``interval`` seconds, ``document()`` (with who wrote it and when) to
    ``folder/<replica>-<start>.json``. Named by the process's start as well as the replica: a
    restarted replica keeps its name, and must not replace what the one before wrote. With
    ``only_on_change``, a document like the last one written is not written again; with
    ``remove_on_stop``, the file goes when the process stops."""

    def __init__(
        self,
        folder: Path,
        document: Callable[[], dict[str, Any]],
        *,
        interval: float = 5.0,
        only_on_change: bool = False,
        remove_on_stop: bool = False,
        replica: str | None = None,
    ) -> None:
        self.folder, self.document, self.interval = folder, document, interval
        self.only_on_change, self.remove_on_stop = only_on_change, remove_on_stop
        self.replica = replica or replica_name()
        self.started_at = datetime.now(UTC)
        self.path = folder / f"{self.replica}-{int(self.started_at.timestamp())}.json"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._written: dict[str, Any] | None = None

    def write(self) -> None:
        body = self.document()
        if self.only_on_change and body == self._written:
            return
        stamped = {"replica": self.replica, "startedAt": self.started_at.isoformat(), "updatedAt": datetime.now(UTC).isoformat(), **body}
        _private_folders(self.folder)
        scratch = self.path.with_name(f".{self.path.name}.tmp")
        scratch.write_text(json.dumps(stamped))
        os.replace(scratch, self.path)
        self._written = body

    def _run(self) -> None:
        while True:
            try:
                self.write()
            except OSError as exc:
                log.warning("could not write %s: %s", self.path, exc)
            if self._stop.wait(self.interval):
                return

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"report-{self.folder.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if self.remove_on_stop:
                self.path.unlink(missing_ok=True)
            else:
                self.write()  # what happened since the last write is not lost
        except OSError as exc:
            log.warning("could not write %s: %s", self.path, exc)
