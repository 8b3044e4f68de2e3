"""A folder standing in for the Azure Files share (the local target)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from infra.errors import PermanentError
from infra.provider import ShareEntry


class LocalShare:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if path != self.root.resolve() and self.root.resolve() not in path.parents:
            raise PermanentError(f"{relative!r} is outside the share root {self.root}", reason="InvalidPath")
        return path

    def list(self, folder: str) -> list[ShareEntry] | None:
        path = self._path(folder)
        if not path.is_dir():
            return None
        entries = []
        for child in sorted(path.iterdir(), key=lambda p: p.name):
            try:
                stat = child.stat()
            except FileNotFoundError:  # gone between listing and looking: as if not listed
                continue
            entries.append(ShareEntry(child.name, stat.st_size, child.is_dir(), etag=f"{stat.st_mtime_ns}"))
        return entries

    def read(self, path: str, *, offset: int = 0, length: int | None = None) -> bytes:
        with open(self._path(path), "rb") as handle:
            handle.seek(offset)
            return handle.read() if length is None else handle.read(length)

    def copy(self, source: str, destination: str) -> None:
        target = self._path(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        shutil.copyfile(self._path(source), scratch)
        os.replace(scratch, target)

    def write(self, path: str, content: bytes) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        scratch.write_bytes(content)
        os.replace(scratch, target)

    def close(self) -> None:
        pass
