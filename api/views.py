"""The JSON of a deployment's public form, made once per resourceVersion.

Turning a row into ``InferenceDeploymentPublic`` validates its spec and status again (about
30 µs a deployment), and its JSON costs as much again; a list of 50 paid both on every call, and
decoding the row's JSON columns cost more than either. A row's public form depends on nothing
but the row, and every write to a row moves its resourceVersion, so (uid, resourceVersion)
names one JSON text for good: it is made the first time it is asked for and kept, within a
bound, for the next reader. A reader that holds only (uid, resourceVersion), read without the
documents, finds the text here (``cached_json``) and needs no row at all.

Only each deployment's newest text is kept: an older version is asked for by nobody once a
newer one is read, and keeping every version (and the pydantic form beside each text) up to the
bound held several copies of every deployment (about 40 MB per 1,000 deployments in a
steady daemon). The JSON is what FastAPI would write for the form as the response model (by
alias, without nulls).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from state.models import InferenceDeployment


class PublicViews:
    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._texts: OrderedDict[str, tuple[int, bytes]] = OrderedDict()  # uid -> (resourceVersion, JSON)
        self._lock = threading.Lock()

    def json_of(self, row: InferenceDeployment) -> bytes:
        text = self.cached_json(row.uid, row.resource_version)
        if text is None:
            text = row.to_public().model_dump_json(by_alias=True, exclude_none=True).encode()
            self._keep(row.uid, row.resource_version, text)
        return text

    def cached_json(self, uid: str, resource_version: int) -> bytes | None:
        with self._lock:
            found = self._texts.get(uid)
            if found is None or found[0] != resource_version:
                return None
            self._texts.move_to_end(uid)
            return found[1]

    def _keep(self, uid: str, resource_version: int, text: bytes) -> None:
        with self._lock:
            found = self._texts.get(uid)
            if found is not None and found[0] > resource_version:
                return  # a reader of an older row came late: the newer text stays
            self._texts[uid] = (resource_version, text)
            self._texts.move_to_end(uid)
            while len(self._texts) > self.capacity:
                self._texts.popitem(last=False)
