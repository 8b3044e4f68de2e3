"""The inference app that runs inside the GPU container (and as a process for the local target).

Contract:
- ships alone: imports nothing of loraplane's other packages;
- settings come from the environment (``serving.settings``), with the AI Toolkit's layout as
  defaults: share root /mount, port 7860;
- OpenAI-compatible HTTP (``serving.router`` over ``serving.protocol``), a Gradio chat at ``/``;
- ``serving.engine`` owns the model: one worker thread runs batched generation and every change
  to the model (loading or dropping an adapter), so nothing mutates the model mid-forward;
- adapter swaps are drain-safe (``serving.adapters``): a request keeps the adapter it was
  admitted with; a broken new adapter is refused and the old one keeps serving;
- every response names the adapter version that produced it (``x-adapter-version``,
  ``system_fingerprint``).
"""
