"""Makes the world match the database, one deployment at a time.

Contract:
- level-triggered: ``Reconciler.reconcile(name)`` reads the desired state from the store,
  never from the event that woke it; observes through a Provider; plans (pure); applies; and
  writes status and events only when they change (a steady state costs zero writes);
- ``Controller`` owns when: an APScheduler resync timer per deployment (jittered), wake-ups
  from the store's writes, and a work queue that never runs one key twice at once, collapses
  duplicate wake-ups and feeds a bounded pool of workers;
- failures are classified in one place (``reconciler.errors``): TemporaryError and anything
  unexpected retry with per-key exponential backoff and jitter (1 s doubling to 5 min);
  PermanentError stops retrying until the spec changes, its reason in the Degraded condition;
- every write of a pass (status, events, adapter versions, cloud-resource records) goes
  through one ``PassWriter`` (``reconciler.writer``) and lands in one transaction; under a
  leader lease each write carries the lease's fence, so a deposed leader writes nothing;
- deletion is a finalizer: the row stays, marked, until the provider's teardown is done;
- imports ``state`` and ``infra``; never ``api``.
"""
