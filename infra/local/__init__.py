"""The local target: the serving app as a supervised process on this machine, with a folder
standing in for the Azure Files share.

Contract:
- ``LocalProvider`` implements the target interfaces of ``infra.provider``: observe (is the
  process running, with the settings the spec asks for, and does it answer /readyz), a pure
  plan (start, restart, stop, adopt), apply, delete, the adapter data plane and its log;
- a process is launched without a shell, on a free loopback port, and recognised after a
  daemon restart by a marker in its environment, so nothing is started twice (``process``);
- the share is a folder (``share``): listings, ranged reads, copies, atomic replaces;
- quick deaths are restarted with backoff; a death wakes the reconciler at once.
"""
