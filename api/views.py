"""The public form of a deployment, and its JSON, made once per resourceVersion.

Turning a row into ``InferenceDeploymentPublic`` validates its spec and status again (about
30 µs a deployment), and its JSON costs as much again; a list of 50 paid both on every call, and
decoding the row's JSON columns cost more than either. A row's public form depends on nothing
but the row, and every write to a row moves its resourceVersion, so (uid, resourceVersion)
names one public form, and one JSON text, for good: each is made the first time it is asked for
and kept, within a bound, for the next reader. A reader that holds only (uid, resourceVersion),
read without the documents, finds the text here (``cached_json``) and needs no row at all.

The forms are shared, so nobody may change one. The JSON is what FastAPI would write for the
form as the response model (by alias, without nulls).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from state.models import InferenceDeployment, InferenceDeploymentPublic

Key = tuple[str, int]


class PublicViews:
    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._forms: OrderedDict[Key, InferenceDeploymentPublic] = OrderedDict()
        self._texts: OrderedDict[Key, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, row: InferenceDeployment) -> InferenceDeploymentPublic:
        key = (row.uid, row.resource_version)
        with self._lock:
            form = self._forms.get(key)
            if form is not None:
                self._forms.move_to_end(key)
                return form
        form = row.to_public()
        self._keep(self._forms, key, form)
        return form

    def json_of(self, row: InferenceDeployment) -> bytes:
        key = (row.uid, row.resource_version)
        text = self.cached_json(*key)
        if text is None:
            text = self.of(row).model_dump_json(by_alias=True, exclude_none=True).encode()
            self._keep(self._texts, key, text)
        return text

    def cached_json(self, uid: str, resource_version: int) -> bytes | None:
        key = (uid, resource_version)
        with self._lock:
            text = self._texts.get(key)
            if text is not None:
                self._texts.move_to_end(key)
            return text

    def _keep(self, cache: OrderedDict, key: Key, value: object) -> None:
        with self._lock:
            cache[key] = value
            while len(cache) > self.capacity:
                cache.popitem(last=False)
