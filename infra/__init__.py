"""Providers: how a deployment's desired state is made real on a target.

Contract:
- one small, idempotent interface per concern (``infra.provider``): ``Provider`` observes (read
  only, an ``Observation`` whose ``private`` part only that provider reads), plans (pure:
  target + observation -> actions), applies the actions and deletes (tears down what loraplane
  created; never what it adopted); ``AdapterHost`` is the adapter data plane (the share, the
  serving app's adapter calls), ``LogSource`` the logs, ``Background`` the provider's threads.
  ``TargetProvider`` is all four: what the reconciler is handed per target;
- providers raise ``infra.errors.TemporaryError`` (retry, optionally after a delay) or
  ``PermanentError`` (no retry until the spec changes); anything else is treated as temporary;
- ``infra.local`` runs the serving app as a supervised process, with a folder for the share;
  ``infra.azure`` makes the Azure resources with the official SDK clients;
- reads the resource's schema from ``state.resource`` (and Azure's limits from
  ``state.azure_limits``), never the database: the reconciler hands each call what it needs.
  Never imports ``api`` or ``reconciler``.
"""
