"""The service's settings: one typed object, built at the entrypoint and passed down."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "loraplane"


class ServiceSettings(BaseSettings):
    """``loraplane serve``'s settings; each field can be set as ``LORAPLANE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="LORAPLANE_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    resync_seconds: float = Field(default=30.0, gt=0)
    workers: int = Field(default=4, ge=1, le=64)
    log_level: str = "info"
    # The folders a local deployment's spec.local.shareRoot may name (or lie under), as
    # LORAPLANE_LOCAL_SHARE_ROOTS=/srv/shares:/data/models (a JSON list works too). The daemon
    # reads and writes there on a deployer's behalf, so only what the operator lists: by
    # default the demo's folder alone (see share_roots()).
    local_share_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # How to start the serving app for the local target (JSON list in the environment);
    # default: this Python running ``-m serving``.
    serving_command: list[str] | None = None
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    # GPU time and its cost: the price per GPU-hour of each workload profile type (a JSON file:
    # {"currency", "source", "prices": {TYPE: price}}; default: no Azure price, the local target
    # at 0), how often a deployment's GPU time is written, and the GPUs a local serving process
    # counts as (the local target stands in for a GPU replica; 0 on a machine without one).
    gpu_prices: Path | None = None
    usage_flush_seconds: float = Field(default=300.0, ge=1, le=3600)
    local_gpus_per_process: float = Field(default=1.0, ge=0, le=64)
    # On SIGTERM, first this long answering 503 (readiness too) while what is in flight
    # finishes, so that a load balancer sends the next requests to another replica; then stop.
    # 0 (the default, right for one process on a laptop): stop at once. A second signal stops
    # at once too.
    shutdown_drain_seconds: float = Field(default=0.0, ge=0, le=600)
    # The API's limits: a request body's size (413 past it), and open watch streams.
    max_request_bytes: int = Field(default=3 * 1024 * 1024, ge=1024)
    max_watches: int = Field(default=1000, ge=1)
    max_watches_per_token: int = Field(default=100, ge=1)
    # Admission control: requests in flight at once (429 past it, at once), and writes per
    # token (a token bucket each).
    max_requests_in_flight: int = Field(default=8, ge=1)
    writes_per_second: float = Field(default=50.0, gt=0)
    write_burst: int = Field(default=100, ge=1)
    # Threads that do the API's database work. Few: each thread busy in Python takes its turn at
    # the GIL, and the event loop (which reads, refuses and answers every request) and the
    # reconciler's workers wait behind all of them.
    api_threads: int = Field(default=8, ge=1, le=256)
    # How long a token found valid is taken as valid without looking again (0: look every
    # time); a token revoked through another replica is refused here within this time.
    token_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    # What this process runs: the API and the reconciler (all), or one of them, so that on
    # PostgreSQL API replicas can run apart from the reconciling replicas.
    role: Literal["all", "api", "reconciler"] = "all"
    # On PostgreSQL the deployments fall into this many shards, each reconciled by the replica
    # that holds its lease: replicas share the shards. Every replica of one database must use
    # the same number (a lease's name says its count). 1: one replica reconciles everything.
    shards: int = Field(default=16, ge=1, le=1024)
    # A shard's lease: how long it lasts unrenewed (a killed replica's shards move within it).
    shard_lease_seconds: float = Field(default=15.0, ge=3, le=600)
    # Bearer tokens with roles; "off" only for a single-user local run (every caller is admin).
    auth: Literal["on", "off"] = "on"
    # The azure target. The defaults reach the public cloud with DefaultAzureCredential; the
    # simulator stands in with its URL, its CA bundle and the static credential. HTTPS is
    # always verified.
    azure_arm_url: str = Field(default="https://management.azure.com", pattern=r"^https://")
    azure_ca_bundle: Path | None = None
    azure_credential: Literal["default", "static"] = "default"
    azure_polling_seconds: float = Field(default=5.0, gt=0)
    # How old an ARM read may be and still serve an observation (container apps are listed per
    # resource group); unless it is set, the smaller of this and half of resync_seconds is used.
    azure_observe_max_age_seconds: float = Field(default=10.0, ge=0)
    # The client-side ARM limiter: these buckets for each subscription and principal, shared by
    # every worker.
    azure_reads_per_second: float = Field(default=25.0, gt=0)
    azure_read_burst: int = Field(default=225, ge=1)
    azure_writes_per_second: float = Field(default=10.0, gt=0)
    azure_write_burst: int = Field(default=180, ge=1)
    azure_deletes_per_second: float = Field(default=10.0, gt=0)
    azure_delete_burst: int = Field(default=180, ge=1)

    @field_validator("local_share_roots", mode="before")
    @classmethod
    def _split_share_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part for part in text.split(os.pathsep) if part.strip()]
        return value

    @field_validator("local_share_roots")
    @classmethod
    def _absolute_share_roots(cls, value: list[Path]) -> list[Path]:
        for path in value:
            if not path.is_absolute():
                raise ValueError(f"{path} is not an absolute path: list absolute folders, separated by '{os.pathsep}'")
        return value

    def demo_share(self) -> Path:
        return self.data_dir / "demo-share"

    def share_roots(self) -> list[Path]:
        """The allowed share roots: those configured, else the demo's folder alone."""
        return list(self.local_share_roots) or [self.demo_share()]

    def database(self) -> str:
        # Imported here: the CLI's client commands read ClientSettings and should not pay
        # for loading SQLAlchemy and Alembic.
        from state.db import sqlite_url

        return self.database_url or sqlite_url(self.data_dir)


def default_config_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "loraplane" / "config.yaml"


class ClientSettings(BaseSettings):
    """The CLI's settings: where the API is and the token to show it. The environment
    (LORAPLANE_URL, LORAPLANE_TOKEN) wins over the config file (``url:`` and ``token:`` in
    $XDG_CONFIG_HOME/loraplane/config.yaml, or LORAPLANE_CONFIG)."""

    model_config = SettingsConfigDict(env_prefix="LORAPLANE_", extra="ignore")

    url: str | None = None
    token: str | None = Field(default=None, repr=False)
    timeout_seconds: float = 30.0
    # How long a command retries an API that answers 429 or 503 before it gives up.
    retry_seconds: float = Field(default=30.0, ge=0)
    config: Path = Field(default_factory=default_config_file)

    def resolved(self) -> tuple[str, str | None]:
        """(url, token), filling in from the config file what the environment left out."""
        url, token = self.url, self.token
        if (url is None or token is None) and self.config.is_file():
            import yaml

            try:
                document = yaml.safe_load(self.config.read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ValueError(f"{self.config}: cannot read it ({exc})".splitlines()[0]) from exc
            if not isinstance(document, dict):
                raise ValueError(f"{self.config}: expected 'url:' and 'token:' keys")
            url = url or document.get("url")
            token = token or document.get("token")
        return url or "http://127.0.0.1:8080", token
