"""The serving app's settings, read from the environment when the app starts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ServingSettings(BaseSettings):
    """Each field is ``LORAPLANE_<FIELD>``; defaults follow the AI Toolkit's container layout."""

    model_config = SettingsConfigDict(env_prefix="LORAPLANE_", extra="ignore")

    share_root: Path = Path("/mount")
    model_path: str = "model-cache/microsoft/Phi-3-mini-4k-instruct"
    adapter_path: str = "models/qlora/qlora/gpu_model/adapter"
    # A JSON file under the share root naming the version to serve and its folder; when set,
    # it (not the adapter folder) decides what is served: how the reconciler steers replicas.
    adapter_pointer: str | None = None
    # The restart strategy's explicit version: this process serves exactly the version staged
    # beside the pointer (``<pointer folder>/adapters/<version>``), whatever the pointer says.
    adapter_version: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    # The same for a deployment of several adapters, as JSON: {"NAME": "VERSION", ...}; each
    # adapter named serves exactly that version, the others follow the pointer.
    adapter_versions: dict[str, str] = Field(default_factory=dict)
    # How many adapters' weights are in the model at once; past it, the least recently used
    # idle one is unloaded, and loaded again from its staged copy on its next request.
    max_resident_adapters: int = Field(default=8, ge=1)
    allow_base_only: bool = False
    admin_token: str | None = Field(default=None, repr=False)
    # A JSON file under the share root with the inference keys' hashes and limits (written by
    # loraplane). When set, every route but the probes needs one of those keys, and a missing
    # file lets nobody in (serving.keys).
    api_keys_file: str | None = None
    keys_refresh_seconds: float = Field(default=1.0, gt=0)
    # How often this replica writes its status (with a pointer) and its keys' usage (with keys)
    # to the share, beside the pointer (serving.reports).
    report_interval_seconds: float = Field(default=5.0, gt=0)
    host: str = "0.0.0.0"
    port: int = Field(default=7860, ge=1, le=65535)
    # HTTPS straight from the app, for where no ingress terminates TLS in front of it (the
    # Azure simulator's stand-in for ACA's ingress). Both or neither.
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    watch_interval_seconds: float = Field(default=5.0, gt=0)
    # Off: the adapter is read once at start and on the reload endpoint only (loraplane's
    # restart strategy, where a new adapter means a new process).
    watch: bool = True
    device: str | None = None  # cuda, cpu; default: cuda when present
    dtype: str | None = None  # float32, float16, bfloat16; default: by device
    load_in_4bit: bool = False
    max_batch_size: int = Field(default=8, ge=1, le=256)
    batch_wait_ms: float = Field(default=5.0, ge=0)
    # continuous: a waiting job joins the running batch at the next step; static: only once
    # the batch has emptied (the old way, kept to measure against: bench/serving.py).
    batching: Literal["continuous", "static"] = "continuous"
    # Jobs (one per prompt) waiting for a place in the batch; past it, 429 and Retry-After.
    max_queued_jobs: int = Field(default=256, ge=1)
    max_tokens_default: int = Field(default=256, ge=1)
    max_tokens_limit: int = Field(default=4096, ge=1)
    keepalive_seconds: float = Field(default=15.0, gt=0)
    # What a request may bring: its body (413 past it, before it is read whole) and its prompt
    # text (400 past it, before it is tokenized: a tokenizer on 10 MB costs seconds of CPU).
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_prompt_bytes: int = Field(default=512 * 1024, ge=1)
    # Prompts in one completions request (a list is a batch, one choice each): harnesses send
    # a few; a cap keeps one request from filling the queue ahead of everyone else.
    max_prompts_per_request: int = Field(default=128, ge=1)
    ui: bool = True
    deployment: str | None = None  # the loraplane deployment this app serves, for names

    @field_validator("adapter_versions")
    @classmethod
    def _versions_are_ids(cls, value: dict[str, str]) -> dict[str, str]:
        for name, version in value.items():
            if not ID.fullmatch(name) or not ID.fullmatch(version):
                raise ValueError(f"{name!r}: {version!r} is not an adapter name and a version id")
        return value

    @property
    def default_adapter(self) -> str:
        """The name clients ask for the adapter by, when the pointer names none (one adapter)."""
        return self.deployment or "adapter"

    def pinned_versions(self) -> dict[str, str]:
        """The restart strategy's versions, by adapter: what this process serves, whatever the
        pointer says."""
        pinned = dict(self.adapter_versions)
        if self.adapter_version is not None:
            pinned.setdefault(self.default_adapter, self.adapter_version)
        return pinned

    def staged_dir(self, version: str) -> Path | None:
        """Where loraplane stages ``version``: beside the pointer (None without one)."""
        return self.pointer_file.parent / "adapters" / version if self.pointer_file is not None else None

    @property
    def model_dir(self) -> Path:
        return self.share_root / self.model_path

    @property
    def adapter_dir(self) -> Path:
        return self.share_root / self.adapter_path

    @property
    def pointer_file(self) -> Path | None:
        return self.share_root / self.adapter_pointer if self.adapter_pointer else None

    @property
    def keys_file(self) -> Path | None:
        return self.share_root / self.api_keys_file if self.api_keys_file else None
