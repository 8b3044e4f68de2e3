"""Desired and observed state of loraplane's resources, kept in a SQL database.

Contract:
- owns the resource's shape (``state.resource``: the spec a team asks for, its validation
  and defaults, and the status the reconciler reports) and its tables (``state.models``);
- owns the schema: Alembic migrations under ``state/migrations``, applied by
  ``state.db.upgrade_database`` when the service starts;
- ``state.store.DeploymentStore`` is the only way in or out: optimistic concurrency on
  ``resourceVersion``, ``generation`` bumped only when the spec changes, no write when
  nothing changed;
- runs on SQLite (WAL, busy timeout) and PostgreSQL with the same code;
- imports nothing of loraplane's other packages.
"""
