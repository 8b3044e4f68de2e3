"""The azure target: the Provider interface over the official Azure SDK clients.

Contract:
- ``AzureProvider`` observes (reads only), plans (pure: ``changes(target, facts)``) and
  applies through azure-mgmt-resource, -storage, -loganalytics and -appcontainers, and the
  share through azure-storage-file-share; request bodies come from the SDKs' model classes
  (``infra.azure.desired``);
- long-running operations never block a worker; their continuation tokens go to the
  ``ResourceJournal`` the reconciler provides, so a restart resumes polling;
- every ARM call passes one shared client-side limiter (``infra.azure.limiter``); every SDK
  error leaves as TemporaryError or PermanentError through one table of ARM error codes
  (``infra.azure.errors``), chained with ``from``;
- credentials from azure-identity (DefaultAzureCredential), or a fixed token for the
  simulator only; HTTPS always verified, against a CA bundle of the user's choice when set;
- secrets (storage and workspace keys, the app's admin token) are fetched or made at apply
  time and never stored, logged or returned.
"""
