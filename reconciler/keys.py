"""The deployment's inference keys onto its share: ``keys.json`` beside the adapter pointer,
which every replica of the serving app follows (a key made or revoked takes effect there within
seconds, with no restart and no new revision). Written when what it should say changed, not on
every pass."""

from __future__ import annotations

import hashlib
import json
import threading
from contextlib import closing

from infra.provider import AdapterHost, Target, keys_path, read_reports, usage_folder
from reconciler.writer import ReadStore
from state.keys import document
from state.models import KeyUsage


class KeySync:
    def __init__(self, store: ReadStore) -> None:
        self.store = store
        self._written: dict[str, str] = {}  # deployment uid -> digest of what is on its share
        # deployment uid -> the reconciler's change count for it when its keys were last read:
        # a key made or revoked moves the count (Reconciler.desired_changed), so while it has
        # not moved the keys are as they were and are not read again.
        self._read_at: dict[str, int] = {}
        self._lock = threading.Lock()

    def sync(self, target: Target, host: AdapterHost, *, changes: int | None = None) -> bool:
        """Write the keys file if the spec asks for keys and it says something new; whether it
        was written. ``changes``: the deployment's change count, to skip reading the keys when
        they cannot have changed since the last sync."""
        if not target.spec.api_keys:
            return False
        with self._lock:
            if changes is not None and self._read_at.get(target.uid) == changes and target.uid in self._written:
                return False
        text = json.dumps(document(self.store.inference_keys(target.uid)), sort_keys=True).encode()
        digest = hashlib.sha256(text).hexdigest()
        with self._lock:
            if self._written.get(target.uid) == digest:
                if changes is not None:
                    self._read_at[target.uid] = changes
                return False
        with closing(host.share(target)) as share:
            share.write(keys_path(target.name, target.uid), text)
        with self._lock:
            self._written[target.uid] = digest
            if changes is not None:
                self._read_at[target.uid] = changes
        return True

    def forget(self, uid: str | None = None) -> None:
        """One deployment's memory (it is gone), or everyone's (None)."""
        with self._lock:
            if uid is None:
                self._written.clear()
                self._read_at.clear()
            else:
                self._written.pop(uid, None)
                self._read_at.pop(uid, None)


def read_usage(target: Target, host: AdapterHost) -> dict[str, KeyUsage]:
    """What the deployment's replicas served under each key, summed over the files they write
    on the share (one a replica process, counted since it started), by the first 16 digits of
    the key's hash: a key revoked and made again under its name starts from nothing."""
    totals: dict[str, KeyUsage] = {}
    with closing(host.share(target)) as share:
        reports = read_reports(share, usage_folder(target.name, target.uid))
    for report in reports:
        counted = report.get("keys")
        if not isinstance(counted, dict):
            continue
        for digest, counts in counted.items():
            total = totals.setdefault(digest, KeyUsage())
            total.requests += int(counts.get("requests", 0))
            total.prompt_tokens += int(counts.get("promptTokens", 0))
            total.completion_tokens += int(counts.get("completionTokens", 0))
            total.refused += int(counts.get("refused", 0))
    return totals
