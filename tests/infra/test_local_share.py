"""The local share: what the daemon reads and writes there on a deployer's behalf stays inside
it, and is never more readable than what it came from."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from infra.errors import PermanentError
from infra.local.share import LocalShare


@pytest.fixture
def root(tmp_path: Path) -> Path:
    share = tmp_path / "share"
    (share / "adapter").mkdir(parents=True)
    (share / "adapter" / "adapter_config.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("the host's")
    return share


def test_a_link_out_of_the_share_is_neither_listed_nor_read(root: Path, tmp_path: Path):
    (root / "adapter" / "adapter_model.safetensors").symlink_to(tmp_path / "secret.txt")
    (root / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    share = LocalShare(root)
    assert [e.name for e in share.list("adapter") or []] == ["adapter_config.json"]
    for path in ("adapter/adapter_model.safetensors", "elsewhere/secret.txt"):
        with pytest.raises(PermanentError) as refused:
            share.read(path)
        assert refused.value.reason == "InvalidPath" and "outside the share root" in refused.value.message
    with pytest.raises(PermanentError):
        share.copy("adapter/adapter_model.safetensors", ".loraplane/x/adapters/v/adapter_model.safetensors")


def test_a_link_inside_the_share_is_followed(root: Path):
    (root / "models").mkdir()
    (root / "models" / "weights").write_bytes(b"w")
    (root / "adapter" / "adapter_model.safetensors").symlink_to(root / "models" / "weights")
    assert LocalShare(root).read("adapter/adapter_model.safetensors") == b"w"


def test_a_copy_keeps_its_sources_mode_in_folders_for_the_owner_alone(root: Path):
    source = root / "adapter" / "adapter_config.json"
    source.chmod(0o600)
    share = LocalShare(root)
    share.copy("adapter/adapter_config.json", ".loraplane/bot/0123abcd/adapters/v1/adapter_config.json")
    copied = root / ".loraplane/bot/0123abcd/adapters/v1/adapter_config.json"
    assert copied.read_text() == "{}" and stat.S_IMODE(copied.stat().st_mode) == 0o600
    for folder in (root / ".loraplane", root / ".loraplane/bot", copied.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    share.write(".loraplane/bot/0123abcd/current.json", b"{}")
    assert stat.S_IMODE((root / ".loraplane/bot/0123abcd/current.json").stat().st_mode) == 0o600


def test_teardown_removes_a_folder_but_never_what_a_link_leads_to(root: Path):
    (root / ".loraplane/bot").mkdir(parents=True)
    (root / ".loraplane/bot/0123abcd").symlink_to(root / "adapter", target_is_directory=True)
    share = LocalShare(root)
    with pytest.raises(PermanentError):
        share.remove_tree(".loraplane/bot/0123abcd")
    assert (root / "adapter" / "adapter_config.json").is_file()
    with pytest.raises(PermanentError):
        share.remove_tree(".")
    (root / ".loraplane/bot/0123abcd").unlink()
    (root / ".loraplane/bot/0123abcd/adapters").mkdir(parents=True)
    share.remove_tree(".loraplane/bot/0123abcd")
    assert not (root / ".loraplane/bot/0123abcd").exists()
