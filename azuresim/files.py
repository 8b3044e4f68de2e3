"""The Azure Files data plane, the subset loraplane uses: directories (create, properties,
list, delete), files (create, ranged upload, properties, ranged download, delete) and
server-side copy. Each share is a folder, ``ROOT/ACCOUNT/SHARE``, so that what a container
mounts and what the REST API shows are the same bytes, as with a real SMB mount.

Requests must be signed with the account's shared key (``Authorization: SharedKey
ACCOUNT:SIGNATURE``), verified against the key ``listKeys`` hands out. URLs are path-style
(``https://127.0.0.1:PORT/ACCOUNT/SHARE/PATH``), as the storage SDKs use for loopback hosts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shutil
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse
from xml.sax.saxutils import escape

from fastapi import Request
from fastapi.responses import Response

API_VERSION_HEADER = "2025-11-05"
# The headers a shared-key signature covers, in order (Range is signed as empty: the SDKs
# send ranges as x-ms-range, which the canonical x-ms- headers cover).
SIGNED_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)


class FilesError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self, method: str) -> Response:
        headers = {"x-ms-error-code": self.code, "x-ms-request-id": str(uuid.uuid4()), "x-ms-version": API_VERSION_HEADER}
        if method == "HEAD":  # no body on HEAD: the code travels in the header alone
            return Response(status_code=self.status, headers=headers)
        body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{self.code}</Code><Message>{escape(self.message)}</Message></Error>'
        return Response(body, status_code=self.status, headers=headers, media_type="application/xml")


def _http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _etag(stat: os.stat_result) -> str:
    return f'"0x{stat.st_mtime_ns:X}{stat.st_size:X}"'


def _header_order(name: str) -> tuple[str, str]:
    # The service sorts x-ms- headers with '-' given no weight first; ties fall back to ordinal.
    return name.replace("-", ""), name


class FilesSimulator:
    """Serves ``/{account}/{share}/...``; ``account_keys(account)`` lists the account's keys,
    none when no such storage account exists."""

    def __init__(
        self,
        root: Path,
        account_keys: Callable[[str], list[str]],
        count: Callable[[str, str], None],
        shared_key_allowed: Callable[[str], bool] = lambda account: True,
    ) -> None:
        self.root = root
        self.account_keys = account_keys
        self.count = count
        self.shared_key_allowed = shared_key_allowed
        self.md5: dict[Path, str] = {}  # Content-MD5 given when a file was created

    def share_folder(self, account: str, share: str) -> Path:
        return self.root / account / share

    # ------------------------------------------------------------------------ requests

    async def handle(self, request: Request, account: str, rest: str) -> Response:
        method = request.method
        query = request.query_params
        label = "directories" if query.get("restype") == "directory" else "files"
        self.count(method, f"Microsoft.Storage/fileShares/{label}")
        try:
            body = await request.body()
            self._authenticate(request, account)
            share, _, path = rest.partition("/")
            if not share:
                raise FilesError(400, "InvalidUri", "the request names no share")
            folder = self.share_folder(account, share)
            if not folder.is_dir():
                raise FilesError(404, "ShareNotFound", f"The specified share {share} does not exist.")
            target = self._resolve(folder, unquote(path))
            if query.get("restype") == "directory":
                return self._directory(method, query.get("comp"), folder, target, request)
            return self._file(method, query.get("comp"), folder, target, request, body)
        except FilesError as exc:
            return exc.response(method)

    def _authenticate(self, request: Request, account: str) -> None:
        keys = self.account_keys(account)
        if not keys:
            raise FilesError(404, "ResourceNotFound", f"the storage account {account} does not exist")
        given = request.headers.get("authorization", "")
        scheme, _, credential = given.partition(" ")
        name, _, signature = credential.partition(":")
        if scheme == "SharedKey" and not self.shared_key_allowed(account):
            # allowSharedKeyAccess: false (shared-key-authorization-prevent)
            raise FilesError(
                403, "KeyBasedAuthenticationNotPermitted", "Key based authentication is not permitted on this storage account."
            )
        if scheme != "SharedKey" or name != account or not signature:
            raise FilesError(
                403,
                "AuthenticationFailed",
                "Server failed to authenticate the request: a SharedKey Authorization header for this account is required.",
            )
        for key in keys:
            for ordering in (_header_order, None):
                if hmac.compare_digest(self._signature(request, account, key, ordering), signature):
                    return
        raise FilesError(
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
        )

    @staticmethod
    def _signature(request: Request, account: str, key: str, ordering: Callable[[str], Any] | None) -> str:
        headers = {name.lower(): value for name, value in request.headers.items() if value}
        if headers.get("content-length") == "0":
            del headers["content-length"]
        signed = [headers.get(name, "") if name != "range" else "" for name in SIGNED_HEADERS]
        x_ms = sorted((name for name in headers if name.startswith("x-ms-")), key=ordering)
        canonical_headers = "".join(f"{name}:{headers[name]}\n" for name in x_ms)
        path = request.scope["raw_path"].decode("latin-1")  # as sent: the SDK signs the encoded path
        queries = sorted((name.lower(), value) for name, value in request.query_params.multi_items())
        canonical_query = "".join(f"\n{name}:{value}" for name, value in queries)
        to_sign = request.method + "\n" + "\n".join(signed) + "\n" + canonical_headers + f"/{account}{path}" + canonical_query
        digest = hmac.new(base64.b64decode(key), to_sign.encode("utf-8"), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    @staticmethod
    def _resolve(folder: Path, path: str) -> Path:
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise FilesError(400, "InvalidResourceName", f"the path {path!r} is not a valid file or directory name")
        return folder.joinpath(*parts)

    def _common(self, target: Path | None = None) -> dict[str, str]:
        headers = {"x-ms-request-id": str(uuid.uuid4()), "x-ms-version": API_VERSION_HEADER, "Date": _http_date(datetime.now(UTC))}
        if target is not None and target.exists():
            stat = target.stat()
            moment = datetime.fromtimestamp(stat.st_mtime, UTC)
            headers.update(
                {
                    "ETag": _etag(stat),
                    "Last-Modified": _http_date(moment),
                    "x-ms-file-creation-time": _iso(moment),
                    "x-ms-file-last-write-time": _iso(moment),
                    "x-ms-file-change-time": _iso(moment),
                    "x-ms-file-attributes": "Directory" if target.is_dir() else "Archive",
                    "x-ms-file-permission-key": "4066528134148476695*1",
                    "x-ms-file-id": str(stat.st_ino),
                    "x-ms-file-parent-id": str(target.parent.stat().st_ino),
                }
            )
        return headers

    # --------------------------------------------------------------------- directories

    def _directory(self, method: str, comp: str | None, folder: Path, target: Path, request: Request) -> Response:
        if method == "PUT" and comp is None:
            if target.exists():
                raise FilesError(409, "ResourceAlreadyExists", "The specified resource already exists.")
            if not target.parent.is_dir():
                raise FilesError(404, "ParentNotFound", "The specified parent path does not exist.")
            target.mkdir()
            return Response(status_code=201, headers=self._common(target) | {"x-ms-request-server-encrypted": "true"})
        if not target.is_dir():
            raise FilesError(404, "ResourceNotFound", "The specified resource does not exist.")
        if method in ("GET", "HEAD") and comp is None:
            return Response(status_code=200, headers=self._common(target))
        if method == "GET" and comp == "list":
            return self._list(folder, target, request)
        if method == "DELETE" and comp is None:
            if target == folder:
                raise FilesError(400, "InvalidUri", "the share's root directory cannot be deleted")
            if any(target.iterdir()):
                raise FilesError(409, "DirectoryNotEmpty", "The specified directory is not empty.")
            target.rmdir()
            return Response(status_code=202, headers=self._common())
        raise FilesError(400, "UnsupportedHttpVerb", f"{method} comp={comp} is not simulated on directories")

    def _list(self, folder: Path, target: Path, request: Request) -> Response:
        prefix = request.query_params.get("prefix", "")
        entries = []
        for child in sorted(target.iterdir(), key=lambda p: p.name):
            if not child.name.startswith(prefix):
                continue
            stat = child.stat()
            name = escape(child.name)
            moment = _iso(datetime.fromtimestamp(stat.st_mtime, UTC))
            times = f"<CreationTime>{moment}</CreationTime><LastAccessTime>{moment}</LastAccessTime><LastWriteTime>{moment}</LastWriteTime><ChangeTime>{moment}</ChangeTime><Last-Modified>{_http_date(datetime.fromtimestamp(stat.st_mtime, UTC))}</Last-Modified><Etag>{escape(_etag(stat))}</Etag>"
            if child.is_dir():
                entries.append(
                    f"<Directory><FileId>{stat.st_ino}</FileId><Name>{name}</Name><Properties>{times}</Properties><Attributes>Directory</Attributes><PermissionKey>4066528134148476695*1</PermissionKey></Directory>"
                )
            else:
                entries.append(
                    f"<File><FileId>{stat.st_ino}</FileId><Name>{name}</Name><Properties><Content-Length>{stat.st_size}</Content-Length>{times}</Properties><Attributes>Archive</Attributes><PermissionKey>4066528134148476695*1</PermissionKey></File>"
                )
        relative = target.relative_to(folder).as_posix()
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<EnumerationResults ServiceEndpoint="{escape(str(request.base_url))}" ShareName="{escape(folder.name)}" DirectoryPath="{escape("" if relative == "." else relative)}">'
            f"<Prefix>{escape(prefix)}</Prefix><DirectoryId>{target.stat().st_ino}</DirectoryId><Entries>{''.join(entries)}</Entries><NextMarker /></EnumerationResults>"
        )
        return Response(body, status_code=200, headers=self._common(), media_type="application/xml")

    # ---------------------------------------------------------------------------- files

    def _file(self, method: str, comp: str | None, folder: Path, target: Path, request: Request, body: bytes) -> Response:
        headers = request.headers
        if target == folder:
            raise FilesError(400, "InvalidUri", "a file request must name a file")
        if method == "PUT" and comp is None and "x-ms-copy-source" in headers:
            return self._copy(folder, target, headers["x-ms-copy-source"])
        if method == "PUT" and comp == "rename":
            return self._rename(folder, target, headers)
        if method == "PUT" and comp is None:
            if headers.get("x-ms-type", "").lower() != "file":
                raise FilesError(400, "MissingRequiredHeader", "x-ms-type: file is required to create a file")
            if not target.parent.is_dir():
                raise FilesError(404, "ParentNotFound", "The specified parent path does not exist.")
            if target.is_dir():
                raise FilesError(409, "ResourceTypeMismatch", "a directory of that name exists")
            size = int(headers.get("x-ms-content-length", "0"))
            with open(target, "wb") as handle:
                handle.truncate(size)
            self.md5.pop(target, None)
            if headers.get("x-ms-content-md5"):
                self.md5[target] = headers["x-ms-content-md5"]
            return Response(status_code=201, headers=self._common(target) | {"x-ms-request-server-encrypted": "true"})
        if not target.is_file():
            raise FilesError(404, "ResourceNotFound", "The specified resource does not exist.")
        if method == "PUT" and comp == "range":
            start, end = _byte_range(headers.get("x-ms-range") or headers.get("range"))
            if headers.get("x-ms-write", "update") == "clear":
                data = b"\0" * (end - start + 1)
            else:
                data = body
                if len(data) != end - start + 1:
                    raise FilesError(400, "InvalidHeaderValue", "the range does not match the body's length")
            if end >= target.stat().st_size:
                raise FilesError(416, "InvalidRange", "The range specified is invalid for the current size of the resource.")
            with open(target, "r+b") as handle:
                handle.seek(start)
                handle.write(data)
            return Response(
                status_code=201,
                headers=self._common(target)
                | {"x-ms-request-server-encrypted": "true", "Content-MD5": base64.b64encode(hashlib.md5(data).digest()).decode()},
            )
        if method == "PUT" and comp == "properties":
            if headers.get("x-ms-content-length"):
                with open(target, "r+b") as handle:
                    handle.truncate(int(headers["x-ms-content-length"]))
            if headers.get("x-ms-content-md5"):
                self.md5[target] = headers["x-ms-content-md5"]
            return Response(status_code=200, headers=self._common(target))
        if method in ("GET", "HEAD") and comp is None:
            return self._read(method, target, headers)
        if method == "DELETE" and comp is None:
            target.unlink()
            self.md5.pop(target, None)
            return Response(status_code=202, headers=self._common())
        raise FilesError(400, "UnsupportedHttpVerb", f"{method} comp={comp} is not simulated on files")

    def _read(self, method: str, target: Path, headers: Any) -> Response:
        size = target.stat().st_size
        common = self._common(target) | {"x-ms-type": "File", "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if target in self.md5:
            common["Content-MD5"] = self.md5[target]
        wanted = headers.get("x-ms-range") or headers.get("range")
        if method == "HEAD":
            return Response(status_code=200, headers=common | {"Content-Length": str(size)})
        if wanted is None:
            return Response(target.read_bytes(), status_code=200, headers=common)
        start, end = _byte_range(wanted)
        if start >= size:
            raise FilesError(416, "InvalidRange", "The range specified is invalid for the current size of the resource.")
        end = min(end, size - 1)
        with open(target, "rb") as handle:
            handle.seek(start)
            data = handle.read(end - start + 1)
        common["Content-Range"] = f"bytes {start}-{end}/{size}"
        return Response(data, status_code=206, headers=common)

    def _copy(self, folder: Path, target: Path, source_url: str) -> Response:
        """Server-side copy within the simulated storage: done by the time the call answers,
        as a same-account copy of a small file is in Azure (x-ms-copy-status: success)."""
        parsed = urlparse(source_url)
        parts = [unquote(p) for p in parsed.path.split("/") if p]
        if len(parts) < 3:
            raise FilesError(400, "InvalidHeaderValue", "x-ms-copy-source must be a file URL in this storage")
        source = self._resolve(self.share_folder(parts[0], parts[1]), "/".join(parts[2:]))
        if not source.is_file():
            raise FilesError(404, "CannotVerifyCopySource", "The specified copy source does not exist.")
        if not target.parent.is_dir():
            raise FilesError(404, "ParentNotFound", "The specified parent path does not exist.")
        shutil.copyfile(source, target)
        if source in self.md5:
            self.md5[target] = self.md5[source]
        return Response(status_code=202, headers=self._common(target) | {"x-ms-copy-id": str(uuid.uuid4()), "x-ms-copy-status": "success"})

    def _rename(self, folder: Path, target: Path, headers: Any) -> Response:
        """Rename within a share: atomic, as on the service (a reader sees the old file or
        the new one, never a part)."""
        source_url = headers.get("x-ms-file-rename-source", "")
        parts = [unquote(p) for p in urlparse(source_url).path.split("/") if p]
        # A URL names account and share first; a bare path is within this share.
        relative = parts[2:] if source_url.startswith("http") else parts
        source = self._resolve(folder, "/".join(relative))
        if not source.is_file():
            raise FilesError(404, "ResourceNotFound", "The source of the rename does not exist.")
        if not target.parent.is_dir():
            raise FilesError(404, "ParentNotFound", "The specified parent path does not exist.")
        if target.exists() and headers.get("x-ms-file-rename-replace-if-exists", "false").lower() != "true":
            raise FilesError(409, "ResourceAlreadyExists", "The specified resource already exists.")
        os.replace(source, target)
        if source in self.md5:
            self.md5[target] = self.md5.pop(source)
        return Response(status_code=200, headers=self._common(target))


def _byte_range(value: str | None) -> tuple[int, int]:
    if not value or not value.startswith("bytes=") or "-" not in value:
        raise FilesError(400, "InvalidHeaderValue", "a byte range (x-ms-range: bytes=START-END) is required")
    start_text, _, end_text = value[len("bytes=") :].partition("-")
    try:
        start = int(start_text)
        end = int(end_text) if end_text else 2**62
    except ValueError as exc:
        raise FilesError(400, "InvalidHeaderValue", f"invalid byte range {value!r}") from exc
    if end < start:
        raise FilesError(400, "InvalidHeaderValue", f"invalid byte range {value!r}")
    return start, end
