"""The management clients of one subscription, and how the provider reaches Azure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.mgmt.appcontainers import ContainerAppsAPIClient
from azure.mgmt.loganalytics import LogAnalyticsManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.storage import StorageManagementClient

from infra.azure.limiter import ArmLimiter

PUBLIC_CLOUD = "https://management.azure.com"
# Microsoft.App's api-version: the SDK's own default, named so that a list made through the
# client's send_request (infra.azure.kinds.ContainerApp.list_group) asks for the same.
APPS_API_VERSION = "2026-07-01"


@dataclass(frozen=True)
class AzureConfig:
    """How to reach Azure: the public cloud by default, or the simulator (its URL, its CA
    bundle, and the ``static`` credential)."""

    arm_url: str = PUBLIC_CLOUD
    ca_bundle: Path | None = None
    credential: str = "default"
    polling_seconds: float = 5.0
    probe_timeout_seconds: float = 5.0
    # How old a read may be and still serve an observation (see infra.azure.inventory); below
    # the resync interval, so that each resync judges drift on a read made since the last one.
    observe_max_age_seconds: float = 10.0
    # A failed revision whose image could not be pulled is restarted at most this often, so
    # that granting AcrPull afterwards is enough (container apps' own advice for a system
    # identity, which exists only once the app does).
    revision_restart_seconds: float = 300.0
    # An app that answered ready is asked again after this long at most while nothing ARM
    # says of it changes (sooner when something does).
    probe_recheck_seconds: float = 300.0
    # How old an app's revision list may be while its replicas vary (autoscaled, or scaled to
    # zero): what GPU time is counted by. A fixed-scale app's is listed when the app changes.
    revisions_max_age_seconds: float = 60.0


class AzureClients:
    """The four management clients of one subscription, sharing one limiter."""

    def __init__(self, subscription_id: str, config: AzureConfig, credential: Any, limiter: ArmLimiter) -> None:
        options: dict[str, Any] = {
            "base_url": config.arm_url,
            "credential_scopes": [config.arm_url.rstrip("/") + "/.default"],
            "per_retry_policies": [limiter.policy()],
            "polling_interval": config.polling_seconds,
        }
        if config.ca_bundle is not None:
            options["connection_verify"] = str(config.ca_bundle)
        self.resources = ResourceManagementClient(credential, subscription_id, **options)
        self.storage = StorageManagementClient(credential, subscription_id, **options)
        self.logs = LogAnalyticsManagementClient(credential, subscription_id, **options)
        self.apps = ContainerAppsAPIClient(credential, subscription_id, api_version=APPS_API_VERSION, **options)

    def close(self) -> None:
        for client in (self.resources, self.storage, self.logs, self.apps):
            client.close()
