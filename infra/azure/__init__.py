"""The azure target: the Provider interface over the official Azure SDK clients.

Contract:
- one declaration per resource kind (``infra.azure.kinds``: id, parent, dependencies, read,
  desired body and drift fields, write, delete, resume, busy and failed states, health) under
  one generic loop (``infra.azure.provider``) that observes every kind the same way, plans with
  a pure function (``infra.azure.plan.changes(target, facts)``), applies and deletes;
- request bodies come from the SDKs' model classes and meet Azure's documented rules before
  they are sent: the resource's validation refuses what Container Apps would
  (``state.azure_limits``), and the bodies stay inside the REST specification's ranges;
- long-running operations never block a worker; their continuation tokens go to the
  ``ResourceJournal`` the reconciler provides, so a restart resumes polling;
- every ARM call passes the client-side limiter (``infra.azure.limiter``): token buckets per
  subscription and principal, as ARM counts; a reconcile pass never waits for a token (it is
  requeued with the delay, ``infra.ratelimit.Throttled``); every SDK
  error leaves as TemporaryError or PermanentError through one table of ARM error codes
  (``infra.azure.errors``), chained with ``from``;
- credentials from azure-identity (DefaultAzureCredential), or a fixed token for the
  simulator only; HTTPS always verified, against a CA bundle of the user's choice when set;
- secrets (storage and workspace keys, the app's admin token) are fetched or made at apply
  time and never stored, logged or returned.
"""
