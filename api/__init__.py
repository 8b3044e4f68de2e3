"""loraplane's front door: the REST API and the ``loraplane`` CLI.

Contract:
- ``api.app.create_app`` builds the FastAPI app around a ``state.store.DeploymentStore``;
  routes are thin (parse, call the store or the reconciler's planner, answer with a response
  model); every error leaves as RFC 9457 problem+json through one handler (``api.problems``);
  nothing a client sends yields a 500.
- ``api.cli`` is the API's client (it speaks HTTP only, to ``LORAPLANE_URL``) and, for
  ``loraplane serve``, the one place where settings are read and the API and the reconciler
  are wired together.
- May import ``reconciler``, ``state`` and ``infra``; nothing imports ``api``.
"""
