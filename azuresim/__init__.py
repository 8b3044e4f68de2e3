"""A simulator of the Azure APIs loraplane calls, on loopback over HTTPS: a development tool
for the tests, the benchmarks and trying the azure target without Azure. It is not part of the
product: it ships with loraplane's source, not its wheel, and nothing in the product imports it
(an import-linter contract keeps that true). Run it with ``python -m azuresim``.

Contract:
- speaks Azure Resource Manager's wire format (routes, status codes, ``Azure-AsyncOperation``
  long-running operations, ARM error bodies) for the resources the Azure provider manages, so
  the official SDK clients run against it unchanged;
- refuses what Azure refuses: one table of Azure's documented rules (``azuresim.rules``), each
  with the Microsoft page it comes from, the strictest reading where pages disagree; read-only
  properties in a PUT are ignored; responses carry what Microsoft's example responses carry;
- the Azure Files data plane of its storage accounts (list, properties, ranged upload and
  download, server-side copy), shared-key signatures checked (and refused when the account
  turned shared keys off); each share is a folder;
- a revision that is becoming active fails as a replica would (a volume that cannot mount, an
  image it may not pull, a missing wheel, a model that does not fit its memory), with
  ``runningState: Failed`` and a ``provisioningError``; else it runs as a local process
  (``containers``), with the share's folder where the volume is mounted and HTTPS from its CA;
- HTTPS with a CA of its own (trustme), written with its certificate to a folder of its own;
- counts calls by method and resource type (``GET /_sim/calls``), and by subscription
  (``GET /_sim/calls/subscriptions``), and injects faults at a
  configurable rate (``POST /_sim/faults``): 429 with Retry-After, 5xx, slow answers, failed
  long-running operations, quota errors.
"""
