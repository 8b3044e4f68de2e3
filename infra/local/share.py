"""A folder standing in for the Azure Files share (the local target).

Every path is resolved to its real path and must stay inside the root's real path, so a link
never leads the daemon out of the share; files are opened without following a last link, so a
link swapped in after the check is refused rather than followed. What the daemon writes there
(the pointer, staged versions) is in folders only their owner may enter, and a staged file
keeps its source's permission bits: a copy is never readable by more users than the original.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import uuid
from pathlib import Path

from infra.errors import PermanentError
from infra.provider import ShareEntry
from serving.adapter_check import real_path_inside

PRIVATE_FOLDER = 0o700


def inside(root: Path, relative: str) -> Path:
    """``root/relative`` as a real path, or PermanentError(InvalidPath) when it (or a link on
    the way) leads outside the root's real path."""
    path = real_path_inside(root, root / relative)
    if path is None:
        raise PermanentError(
            f"{relative!r} is outside the share root {root} (a link out of the share is not followed)", reason="InvalidPath"
        )
    return path


class LocalShare:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, relative: str) -> Path:
        return inside(self.root, relative)

    def list(self, folder: str) -> list[ShareEntry] | None:
        path = self._path(folder)
        if not path.is_dir():
            return None
        entries = []
        for child in sorted(path.iterdir(), key=lambda p: p.name):
            try:
                real = self._path(f"{folder}/{child.name}")
                stat_result = real.stat()
            except FileNotFoundError:  # gone between listing and looking: as if not listed
                continue
            except PermanentError:  # a link out of the share: not part of it
                continue
            entries.append(ShareEntry(child.name, stat_result.st_size, real.is_dir(), etag=f"{stat_result.st_mtime_ns}"))
        return entries

    def read(self, path: str, *, offset: int = 0, length: int | None = None) -> bytes:
        descriptor = os.open(self._path(path), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(descriptor, "rb") as handle:
            handle.seek(offset)
            return handle.read() if length is None else handle.read(length)

    def _private_folders(self, folder: Path) -> None:
        """``mkdir -p`` below the root, each new folder for its owner only."""
        real_root = Path(os.path.realpath(self.root))
        missing = []
        while folder != real_root and not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=PRIVATE_FOLDER)

    def copy(self, source: str, destination: str) -> None:
        target = self._path(destination)
        self._private_folders(target.parent)
        scratch = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        descriptor = os.open(self._path(source), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(descriptor, "rb") as reader:
            mode = stat.S_IMODE(os.fstat(reader.fileno()).st_mode) & 0o666
            out = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(out, "wb") as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)
            os.chmod(scratch, mode)  # the umask may have taken bits the source has
        os.replace(scratch, target)

    def write(self, path: str, content: bytes) -> None:
        target = self._path(path)
        self._private_folders(target.parent)
        scratch = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
        os.replace(scratch, target)

    def remove_tree(self, folder: str) -> None:
        real_root = Path(os.path.realpath(self.root))
        path = self._path(folder)
        # Only a folder reached without a link: removing what a link points at would remove
        # something else of the share.
        if path == real_root or path != Path(os.path.normpath(real_root / folder)):
            raise PermanentError(f"refusing to remove {folder!r}: it is the share root or reached through a link", reason="InvalidPath")
        shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        pass
