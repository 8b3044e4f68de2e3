"""The public form of a deployment, made once per resourceVersion.

Turning a row into ``InferenceDeploymentPublic`` validates its spec and status again (about
30 µs a deployment), and a list of 50 paid that on every call. A row's public form depends on
nothing but the row, and every write to a row moves its resourceVersion, so (uid,
resourceVersion) names one public form for good: it is made the first time it is asked for and
kept, within a bound, for the next reader. The forms are shared, so nobody may change one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from state.models import InferenceDeployment, InferenceDeploymentPublic


class PublicViews:
    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._forms: OrderedDict[tuple[str, int], InferenceDeploymentPublic] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, row: InferenceDeployment) -> InferenceDeploymentPublic:
        key = (row.uid, row.resource_version)
        with self._lock:
            form = self._forms.get(key)
            if form is not None:
                self._forms.move_to_end(key)
                return form
        form = row.to_public()
        with self._lock:
            self._forms[key] = form
            while len(self._forms) > self.capacity:
                self._forms.popitem(last=False)
        return form
