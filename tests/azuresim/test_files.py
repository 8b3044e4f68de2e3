"""The simulator's Azure Files data plane, through azure-storage-file-share with the shared key
that listKeys hands out: what the provider and the adapter rollout use."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.storage import StorageManagementClient
from azure.storage.fileshare import ShareClient

from azuresim.server import AzureSimulator
from infra.azure.credentials import StaticTokenCredential
from infra.azure.share import ShareFiles

SUB = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[AzureSimulator]:
    with AzureSimulator(tmp_path / "sim", lro_delay_seconds=0.05, share_root=tmp_path / "shares") as running:
        yield running


@pytest.fixture
def storage(sim: AzureSimulator) -> Iterator[StorageManagementClient]:
    options = {"base_url": sim.url, "connection_verify": str(sim.ca_bundle), "polling_interval": 0.05}
    ResourceManagementClient(StaticTokenCredential(), SUB, **options).resource_groups.create_or_update("rg", {"location": "westus3"})
    client = StorageManagementClient(StaticTokenCredential(), SUB, **options)
    client.storage_accounts.begin_create(
        "rg", "acct", {"location": "westus3", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}
    ).result()
    client.file_shares.create("rg", "acct", "models", {})
    yield client
    client.close()


def share_client(sim: AzureSimulator, storage: StorageManagementClient, *, key: str | None = None) -> ShareClient:
    url = storage.storage_accounts.get_properties("rg", "acct").primary_endpoints.file
    key = key or storage.storage_accounts.list_keys("rg", "acct")["keys"][1]["value"]
    return ShareClient(account_url=url, share_name="models", credential=key, connection_verify=str(sim.ca_bundle))


def test_files_written_through_the_api_are_files_in_the_share_folder_and_back(sim, storage):
    share = share_client(sim, storage)
    share.get_directory_client("adapter").create_directory()
    share.get_file_client("adapter/adapter_config.json").upload_file(b'{"peft_type": "LORA"}')
    weights = bytes(range(256)) * 40_000  # 10 MB: more than one ranged upload and download
    share.get_file_client("adapter/adapter_model.safetensors").upload_file(weights)
    folder = sim.share_folder("acct", "models")
    assert (folder / "adapter" / "adapter_model.safetensors").read_bytes() == weights
    (folder / "adapter" / "_SUCCESS").write_bytes(b"")  # written by a job through the mount

    listed = {entry.name: entry.size for entry in share.get_directory_client("adapter").list_directories_and_files()}
    assert listed == {"adapter_config.json": 21, "adapter_model.safetensors": len(weights), "_SUCCESS": 0}
    properties = share.get_file_client("adapter/adapter_model.safetensors").get_file_properties()
    assert properties.size == len(weights) and properties.etag and properties.last_modified
    assert share.get_file_client("adapter/adapter_model.safetensors").download_file().readall() == weights
    assert share.get_file_client("adapter/_SUCCESS").download_file().readall() == b""

    copy = share.get_file_client("adapter/copy.safetensors")
    assert copy.start_copy_from_url(share.get_file_client("adapter/adapter_model.safetensors").url)["copy_status"] == "success"
    assert (folder / "adapter" / "copy.safetensors").read_bytes() == weights
    share.get_file_client("adapter/copy.safetensors").delete_file()
    assert not (folder / "adapter" / "copy.safetensors").exists()


def test_a_wrong_key_or_a_missing_file_is_refused_as_azure_refuses_it(sim, storage):
    good = share_client(sim, storage)
    good.get_file_client("a.txt").upload_file(b"x")
    key = storage.storage_accounts.list_keys("rg", "acct")["keys"][0]["value"]
    wrong = share_client(sim, storage, key=("B" if key[0] != "B" else "C") + key[1:])
    with pytest.raises(ClientAuthenticationError):
        wrong.get_file_client("a.txt").download_file()
    with pytest.raises(ResourceNotFoundError):
        good.get_file_client("nope.txt").get_file_properties()
    tls = ssl.create_default_context(cafile=str(sim.ca_bundle))
    unsigned = httpx.get(f"{sim.url}/acct/models/a.txt", verify=tls)
    assert unsigned.status_code == 403 and unsigned.headers["x-ms-error-code"] == "AuthenticationFailed"


def test_share_files_makes_folders_and_uploads_once(sim, storage):
    url = storage.storage_accounts.get_properties("rg", "acct").primary_endpoints.file
    key = storage.storage_accounts.list_keys("rg", "acct")["keys"][0]["value"]
    with ShareFiles(url.rstrip("/"), "models", key, ca_bundle=sim.ca_bundle) as files:
        assert not files.exists(".loraplane/dist/x.whl")
        files.upload(".loraplane/dist/x.whl", b"wheel")
        files.upload(".loraplane/dist/y.whl", b"wheel")  # the folders exist already: fine
        assert files.exists(".loraplane/dist/x.whl")
    assert (sim.share_folder("acct", "models") / ".loraplane" / "dist" / "y.whl").read_bytes() == b"wheel"


def test_deleting_the_share_deletes_its_files(sim, storage):
    folder = sim.share_folder("acct", "models")
    (folder / "model").mkdir()
    storage.file_shares.delete("rg", "acct", "models")
    assert not folder.exists()
