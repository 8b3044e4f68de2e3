"""The Azure Files share of a deployment, through azure-storage-file-share with the account's
shared key (fetched by the caller at the time of use, never stored)."""

from __future__ import annotations

from pathlib import Path

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.fileshare import ShareClient


class ShareFiles:
    def __init__(self, account_url: str, share: str, account_key: str, *, ca_bundle: Path | None = None) -> None:
        options = {"connection_verify": str(ca_bundle)} if ca_bundle else {}
        self.client = ShareClient(account_url=account_url, share_name=share, credential=account_key, **options)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> ShareFiles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def make_folders(self, path: str) -> None:
        """Every folder on the way to ``path`` (a folder), as ``mkdir -p``."""
        parts = [p for p in path.split("/") if p]
        for depth in range(1, len(parts) + 1):
            try:
                self.client.get_directory_client("/".join(parts[:depth])).create_directory()
            except ResourceExistsError:
                pass

    def exists(self, path: str) -> bool:
        try:
            self.client.get_file_client(path).get_file_properties()
        except ResourceNotFoundError:
            return False
        return True

    def upload(self, path: str, content: bytes) -> None:
        folder = path.rsplit("/", 1)[0] if "/" in path else ""
        if folder:
            self.make_folders(folder)
        self.client.get_file_client(path).upload_file(content)
