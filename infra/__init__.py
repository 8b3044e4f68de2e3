"""Providers: how a deployment's desired state is made real on a target.

Contract:
- one small, idempotent interface (``infra.provider.Provider``): ``observe`` (read only),
  ``plan`` (pure: desired + observed -> actions), ``apply`` (make the calls), ``delete``
  (tear down what loraplane created; never what it adopted), ``logs``;
- providers raise ``infra.errors.TemporaryError`` (retry, optionally after a delay) or
  ``PermanentError`` (no retry until the spec changes); anything else is treated as temporary;
- ``infra.local`` runs the serving app as a supervised process, with a folder for the share;
- reads the resource's schema from ``state.resource``, never the database: the reconciler
  hands each call what it needs. Never imports ``api`` or ``reconciler``.
"""
