"""Credentials for the Azure SDK clients."""

from __future__ import annotations

import time

from azure.core.credentials import AccessToken, AccessTokenInfo


class StaticTokenCredential:
    """A fixed bearer token, for the Azure simulator only (``LORAPLANE_AZURE_CREDENTIAL=static``):
    the simulator accepts any token; real Azure would reject this one."""

    def __init__(self, token: str = "loraplane-simulator-token", lifetime_seconds: int = 3600) -> None:
        self._token = token
        self._lifetime = lifetime_seconds

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + self._lifetime)

    def get_token_info(self, *scopes: str, options=None) -> AccessTokenInfo:
        return AccessTokenInfo(self._token, int(time.time()) + self._lifetime)


def make_credential(kind: str):
    """``default``: DefaultAzureCredential (environment, managed identity, az login …);
    ``static``: the simulator's fixed token."""
    if kind == "static":
        return StaticTokenCredential()
    if kind == "default":
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()
    raise ValueError(f"unknown credential kind {kind!r}: use 'default' or 'static'")
