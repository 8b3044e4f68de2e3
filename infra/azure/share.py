"""The Azure Files share of a deployment, through azure-storage-file-share with the account's
shared key (fetched by the caller at the time of use, never stored)."""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ClientAuthenticationError, ResourceExistsError, ResourceNotFoundError
from azure.storage.fileshare import ShareClient

from infra.azure.errors import classify_azure_error
from infra.errors import TemporaryError
from infra.provider import ShareEntry

COPY_TIMEOUT_SECONDS = 300.0


class ShareFiles:
    def __init__(
        self,
        account_url: str,
        share: str,
        account_key: str,
        *,
        ca_bundle: Path | None = None,
        on_auth_failure: Callable[[], None] | None = None,
        shared: bool = False,
    ) -> None:
        """``shared``: one client many callers use, each closing it when done: only
        ``close_shared`` closes it (its owner, the provider)."""
        options: dict[str, Any] = {"connection_verify": str(ca_bundle)} if ca_bundle else {}
        self.client = ShareClient(account_url=account_url, share_name=share, credential=account_key, **options)
        self.key_digest = hashlib.sha256(account_key.encode()).hexdigest()  # which key it holds, not the key
        self.on_auth_failure = on_auth_failure
        self.shared = shared

    def _failed(self, exc: AzureError, doing: str) -> Exception:
        if isinstance(exc, ClientAuthenticationError) and self.on_auth_failure is not None:
            self.on_auth_failure()  # the key was rotated: fetch it again next time
        return classify_azure_error(exc, doing=doing)

    def close(self) -> None:
        if not self.shared:
            self.client.close()

    def close_shared(self) -> None:
        self.client.close()

    def __enter__(self) -> ShareFiles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def make_folders(self, path: str) -> None:
        """Every folder on the way to ``path`` (a folder), as ``mkdir -p``."""
        parts = [p for p in path.split("/") if p]
        for depth in range(1, len(parts) + 1):
            with contextlib.suppress(ResourceExistsError):
                self.client.get_directory_client("/".join(parts[:depth])).create_directory()

    def exists(self, path: str) -> bool:
        try:
            self.client.get_file_client(path).get_file_properties()
        except ResourceNotFoundError:
            return False
        return True

    def names(self, folder: str) -> list[str] | None:
        """The files' names in a folder (one listing, no properties); None: no such folder."""
        try:
            return sorted(
                item["name"] for item in self.client.get_directory_client(folder).list_directories_and_files() if not item["is_directory"]
            )
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise self._failed(exc, f"listing {folder} on the share") from exc

    def delete(self, path: str) -> None:
        """Remove a file; one that is already gone is fine."""
        try:
            self.client.get_file_client(path).delete_file()
        except ResourceNotFoundError:
            pass
        except AzureError as exc:
            raise self._failed(exc, f"deleting {path} from the share") from exc

    def remove_tree(self, folder: str) -> None:
        """A folder and everything in it, deepest first; one already gone is fine."""
        try:
            directory = self.client.get_directory_client(folder)
            for item in list(directory.list_directories_and_files()):
                path = f"{folder}/{item['name']}"
                if item["is_directory"]:
                    self.remove_tree(path)
                else:
                    self.delete(path)
            directory.delete_directory()
        except ResourceNotFoundError:
            pass
        except AzureError as exc:
            raise self._failed(exc, f"removing {folder} from the share") from exc

    def upload(self, path: str, content: bytes) -> None:
        folder = path.rsplit("/", 1)[0] if "/" in path else ""
        if folder:
            self.make_folders(folder)
        self.client.get_file_client(path).upload_file(content)

    # The AdapterShare protocol: listing and properties to detect, ranged reads to validate,
    # server-side copies to stage, an upload and a rename to replace the pointer atomically.

    def list(self, folder: str) -> list[ShareEntry] | None:
        try:
            directory = self.client.get_directory_client(folder)
            listed = list(directory.list_directories_and_files(include=["timestamps", "Etag"]))
            entries = []
            for item in sorted(listed, key=lambda i: i["name"]):
                if item["is_directory"]:
                    entries.append(ShareEntry(item["name"], 0, True))
                    continue
                properties = directory.get_file_client(item["name"]).get_file_properties()
                md5 = properties.content_settings.content_md5
                entries.append(
                    ShareEntry(
                        item["name"],
                        properties.size,
                        False,
                        etag=properties.etag,
                        md5=bytes(md5).hex() if md5 else None,
                    )
                )
            return entries
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise self._failed(exc, f"listing {folder} on the share") from exc

    def read(self, path: str, *, offset: int = 0, length: int | None = None) -> bytes:
        try:
            return self.client.get_file_client(path).download_file(offset=offset, length=length).readall()
        except AzureError as exc:
            raise self._failed(exc, f"reading {path} from the share") from exc

    def copy(self, source: str, destination: str) -> None:
        try:
            if "/" in destination:
                self.make_folders(destination.rsplit("/", 1)[0])
            target = self.client.get_file_client(destination)
            copy = target.start_copy_from_url(self.client.get_file_client(source).url)
            deadline = time.monotonic() + COPY_TIMEOUT_SECONDS
            status = copy.get("copy_status")
            while status == "pending":  # a large copy runs on in the service: wait for it
                if time.monotonic() > deadline:
                    raise TemporaryError(f"copying {source} to {destination} on the share is taking too long", reason="CopyPending")
                time.sleep(1.0)
                status = target.get_file_properties().copy.status
            if status != "success":
                raise TemporaryError(f"copying {source} to {destination} on the share ended {status}", reason="CopyFailed")
        except AzureError as exc:
            raise self._failed(exc, f"copying {source} to {destination} on the share") from exc

    def write(self, path: str, content: bytes) -> None:
        folder, _, name = path.rpartition("/")
        scratch = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}" if folder else f".{name}.{uuid.uuid4().hex[:8]}"
        try:
            self.upload(scratch, content)
            self.client.get_file_client(scratch).rename_file(path, overwrite=True)
        except AzureError as exc:
            raise self._failed(exc, f"writing {path} on the share") from exc
