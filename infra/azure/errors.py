"""The one table of ARM error codes: which failures are worth retrying, and how soon.

Every Azure SDK error leaves ``infra.azure`` through ``classify_azure_error``, as a
TemporaryError or PermanentError chained to the SDK's exception.
"""

from __future__ import annotations

from dataclasses import dataclass

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
}

# Words in messages that mean quota even under a generic code.
QUOTA_WORDS = ("cannot have more than", "exceeding approved", "quota")


def _retry_after(error: HttpResponseError) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def classify_azure_error(error: Exception, *, doing: str) -> ProviderError:
    """The provider's error for an SDK exception; raise it ``from`` the original."""
    if isinstance(error, ClientAuthenticationError):
        return PermanentError(f"{doing}: Azure refused the credentials: {error.message}", reason="AuthorizationFailed")
    if isinstance(error, (ServiceRequestError, ServiceResponseError)):
        return TemporaryError(f"{doing}: could not reach Azure: {error}", reason="AzureUnreachable")
    if not isinstance(error, HttpResponseError):
        return TemporaryError(f"{doing}: {type(error).__name__}: {error}", reason="AzureError")
    code = (error.error.code if error.error is not None else None) or ""
    message = (error.error.message if error.error is not None else None) or error.message or str(error)
    said = f"{doing}: Azure said {code or error.status_code}: {message}"
    rule = ARM_ERRORS.get(code)
    if rule is None and any(word in message.lower() for word in QUOTA_WORDS):
        rule = ARM_ERRORS["QuotaExceeded"]
    if rule is None and error.status_code == 429:
        rule = ARM_ERRORS["TooManyRequests"]
    if rule is None:
        # Unknown codes: 4xx is probably our request and will not fix itself, but a permanent
        # stop on a code we have not met is worse than a bounded backoff; 5xx is Azure's.
        return TemporaryError(said, reason="AzureError")
    if rule.permanent:
        return PermanentError(said, reason=rule.reason)
    delay = _retry_after(error) if rule.reason == "Throttled" else rule.delay
    return TemporaryError(said, reason=rule.reason, delay=delay)
