"""Makes the world match the database, one deployment at a time.

Contract:
- level-triggered: ``Reconciler.reconcile(name)`` reads the desired state from the store,
  never from the event that woke it; observes through a Provider; plans (pure); applies; and
  writes status and events only when they change (a steady state costs zero writes);
- ``Controller`` owns when: each pass books its deployment's next resync on the work queue
  (jittered), wake-ups come from the store's writes, and the queue never runs one key twice
  at once, collapses duplicate wake-ups and feeds a bounded pool of workers;
- a steady pass reads its inputs from memory: its row, versions, listings, pointer, plan and
  the replicas' last answers are kept and used again while nothing they depend on
  changed (``reconciler.listing``, the store's change listener);
- failures are classified in one place (``reconciler.errors``): TemporaryError and anything
  unexpected retry with per-key exponential backoff and jitter (1 s doubling to 5 min);
  PermanentError stops retrying until the spec changes, its reason in the Degraded condition;
- every write of a pass (status, events, adapter versions, cloud-resource records) goes
  through one ``PassWriter`` (``reconciler.writer``) and lands in one transaction; on
  PostgreSQL the deployments fall into shards (``reconciler.shards``), each reconciled by the
  replica that holds its lease, and each write carries that shard's fence, so a replica that
  lost a shard writes nothing for it;
- a pass that would wait for an ARM token (``infra.ratelimit.Throttled``) gives its worker
  back and is requeued after the wait;
- deletion is a finalizer: the row stays, marked, until the provider's teardown is done;
- imports ``state`` and ``infra``; never ``api``.
"""
