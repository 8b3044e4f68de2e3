"""A simulator of the Azure APIs loraplane calls, on loopback over HTTPS, for tests and benchmarks.

Contract:
- speaks Azure Resource Manager's wire format (routes, status codes, ``Azure-AsyncOperation``
  long-running operations, ARM error bodies) for the resources the Azure provider manages, so
  the official SDK clients run against it unchanged;
- the Azure Files data plane of its storage accounts (list, properties, ranged upload and
  download, server-side copy), shared-key signatures checked; each share is a folder;
- runs a container app's active revision as a local process (``containers``), with the
  share's folder where the volume is mounted and HTTPS from its CA, so endpoints answer;
- HTTPS with a CA made at start (trustme): the SDKs verify it through the CA bundle it writes;
- counts calls by method and resource type (``GET /_sim/calls``) and injects faults at a
  configurable rate (``POST /_sim/faults``): 429 with Retry-After, 5xx, slow answers, failed
  long-running operations, quota errors;
- a development tool: nothing in the product imports it.
"""
