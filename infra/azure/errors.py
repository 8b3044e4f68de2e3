"""The one table of ARM error codes: which failures are worth retrying, and how soon.

Every Azure SDK error leaves ``infra.azure`` through ``classify_azure_error``, as a
TemporaryError or PermanentError chained to the SDK's exception.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from infra.errors import PermanentError, ProviderError, TemporaryError

# Quota and capacity waits are long: they end when someone raises a quota or frees capacity,
# not in seconds, and a fast retry would only add load.
QUOTA_RETRY_SECONDS = 300.0


@dataclass(frozen=True)
class Rule:
    permanent: bool
    reason: str
    delay: float | None = None  # None: the loop's backoff


ARM_ERRORS: dict[str, Rule] = {
    # Throttling: wait as told (Retry-After), else back off.
    "TooManyRequests": Rule(False, "Throttled"),
    "SubscriptionRequestsThrottled": Rule(False, "Throttled"),
    # Quota and capacity: a slow retry, with Azure's message in the condition.
    "MaxRegionalQuotaExceeded": Rule(False, "QuotaExceeded", QUOTA_RETRY_SECONDS),
    "QuotaExceeded": Rule(False, "QuotaExceeded", QUOTA_RETRY_SECONDS),
    "OperationNotAllowed": Rule(False, "QuotaExceeded", QUOTA_RETRY_SECONDS),
    "SkuNotAvailable": Rule(False, "QuotaExceeded", QUOTA_RETRY_SECONDS),
    "AllocationFailed": Rule(False, "QuotaExceeded", QUOTA_RETRY_SECONDS),
    "ManagedEnvironmentResourceQuotaExceeded": Rule(False, "QuotaExceeded", QUOTA_RETRY_SECONDS),
    # Nothing will change these without a change to the spec (or to the subscription).
    "LocationNotAvailableForResourceType": Rule(True, "UnknownRegion"),
    "LocationNotFound": Rule(True, "UnknownRegion"),
    "NoRegisteredProviderFound": Rule(True, "UnknownRegion"),
    "InvalidWorkloadProfileType": Rule(True, "UnknownWorkloadProfile"),
    "WorkloadProfileNotFound": Rule(True, "UnknownWorkloadProfile"),
    "StorageAccountAlreadyTaken": Rule(True, "NameTaken"),
    "AccountNameInvalid": Rule(True, "InvalidName"),
    "InvalidResourceName": Rule(True, "InvalidName"),
    "AuthorizationFailed": Rule(True, "AuthorizationFailed"),
    "InvalidAuthenticationToken": Rule(True, "AuthorizationFailed"),
    "SubscriptionNotFound": Rule(True, "SubscriptionNotFound"),
    "InvalidSubscriptionId": Rule(True, "SubscriptionNotFound"),
    # A parent still being created or deleted: soon.
    "ResourceGroupNotFound": Rule(False, "DependencyNotReady"),
    "ParentResourceNotFound": Rule(False, "DependencyNotReady"),
    "ManagedEnvironmentNotFound": Rule(False, "DependencyNotReady"),
    "Conflict": Rule(False, "Conflict"),
    "AnotherOperationInProgress": Rule(False, "Conflict"),
    # A body Azure refuses for what it says: the same body is refused again.
    "InvalidRequestContent": Rule(True, "InvalidRequest"),
    "ContainerAppInvalidResourceTotal": Rule(True, "InvalidContainerResources"),
    "ContainerAppMaxReplicasOutOfRange": Rule(True, "InvalidScale"),
    "ContainerAppMinReplicasOutOfRange": Rule(True, "InvalidScale"),
    "ContainerAppMinReplicasGreaterThanMax": Rule(True, "InvalidScale"),
    "WorkloadProfileNameDuplicated": Rule(True, "WorkloadProfileUnavailable"),
    "WorkloadProfileNameReserved": Rule(True, "WorkloadProfileUnavailable"),
    "WorkloadProfileInvalidNameTooLong": Rule(True, "WorkloadProfileUnavailable"),
    "WorkloadProfilePropertyNotSupported": Rule(True, "WorkloadProfileUnavailable"),
    "WorkloadProfileCannotBeAdded": Rule(True, "WorkloadProfileUnavailable"),
    "ContainerAppInvalidName": Rule(True, "InvalidName"),
    "ManagedEnvironmentInvalidName": Rule(True, "InvalidName"),
    "ManagedEnvironmentStorageInvalidName": Rule(True, "InvalidName"),
    "InvalidResourceGroupName": Rule(True, "InvalidName"),
    "InvalidWorkspaceName": Rule(True, "InvalidName"),
    "PropertyChangeNotAllowed": Rule(True, "ChangeNotAllowed"),
    "InvalidResourceLocation": Rule(True, "ChangeNotAllowed"),
    "KeyBasedAuthenticationNotPermitted": Rule(True, "SharedKeyAccessDisabled"),
}
# Families of codes, by their start: Container Apps names each probe field's range error.
ARM_ERROR_FAMILIES: dict[str, Rule] = {
    "ContainerAppProbe": Rule(True, "InvalidProbe"),
}
# An unknown code with a 4xx status is most likely our request: it is retried (a code never met
# should not stop a deployment for good at once), and becomes permanent when the same body is
# refused the same way again (see ``Refusals``).
UNKNOWN_REFUSAL = "AzureRefused"

# Words in messages that mean quota even under a generic code.
QUOTA_WORDS = ("cannot have more than", "exceeding approved", "quota")


def _retry_after(error: HttpResponseError) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def arm_code(error: Exception) -> str:
    """The ARM error code of an SDK exception ("" when it carries none)."""
    details = getattr(error, "error", None) if isinstance(error, HttpResponseError) else None
    return (details.code if details is not None else None) or ""


def classify_azure_error(error: Exception, *, doing: str) -> ProviderError:
    """The provider's error for an SDK exception; raise it ``from`` the original."""
    if isinstance(error, ClientAuthenticationError):
        return PermanentError(f"{doing}: Azure refused the credentials: {error.message}", reason="AuthorizationFailed")
    if isinstance(error, (ServiceRequestError, ServiceResponseError)):
        return TemporaryError(f"{doing}: could not reach Azure: {error}", reason="AzureUnreachable")
    if not isinstance(error, HttpResponseError):
        return TemporaryError(f"{doing}: {type(error).__name__}: {error}", reason="AzureError")
    code = arm_code(error)
    message = (error.error.message if error.error is not None else None) or error.message or str(error)
    said = f"{doing}: Azure said {code or error.status_code}: {message}"
    rule = ARM_ERRORS.get(code) or next((r for prefix, r in ARM_ERROR_FAMILIES.items() if code.startswith(prefix)), None)
    if rule is None and any(word in message.lower() for word in QUOTA_WORDS):
        rule = ARM_ERRORS["QuotaExceeded"]
    if rule is None and error.status_code == 429:
        rule = ARM_ERRORS["TooManyRequests"]
    if rule is None:
        if 400 <= (error.status_code or 0) < 500:
            return TemporaryError(said, reason=UNKNOWN_REFUSAL)
        return TemporaryError(said, reason="AzureError")  # 5xx is Azure's own trouble
    if rule.permanent:
        return PermanentError(said, reason=rule.reason)
    delay = _retry_after(error) if rule.reason == "Throttled" else rule.delay
    return TemporaryError(said, reason=rule.reason, delay=delay)


class Refusals:
    """Unknown 4xx answers, by what was sent: the second time the same body is refused with the
    same code, the refusal is permanent (the status then names Azure's code and message, and
    nothing is sent again until the spec changes)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._seen: dict[tuple[str, str], str] = {}  # (resource id, body digest) -> code
        self._limit = limit
        self._lock = threading.Lock()

    def judge(self, error: ProviderError, *, cause: Exception, resource_id: str, body: Any) -> ProviderError:
        """``error`` as ``classify_azure_error`` made it from ``cause``, the SDK's exception."""
        if not isinstance(error, TemporaryError) or error.reason != UNKNOWN_REFUSAL:
            return error
        key = (resource_id.lower(), _digest(body))
        code = arm_code(cause) or str(getattr(cause, "status_code", ""))
        with self._lock:
            again = self._seen.get(key) == code
            if len(self._seen) >= self._limit:
                self._seen.clear()
            self._seen[key] = code
        if again:
            return PermanentError(f"{error.message} (refused twice for the same request: fix the spec)", reason=UNKNOWN_REFUSAL)
        return error


def _digest(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
