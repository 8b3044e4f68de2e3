"""The azure target: the Provider interface over the official Azure SDK clients.

Contract (growing with the azure issue): credentials from azure-identity, or a fixed token for
the simulator only (``infra.azure.credentials``); HTTPS always verified, against a CA bundle of
the user's choice when one is set.
"""
