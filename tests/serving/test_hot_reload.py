"""Adapter hot reload: under load, drain-safe, and refusing what must not be served."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from serving.tiny import ADAPTER_PATH, SECOND_ADAPTER_PATH, write_random_adapter, write_tiny_model
from tests.fakes import eventually

PROMPT = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 6, "temperature": 0}


def ask(url: str, **extra) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={**PROMPT, **extra}, timeout=60)


def version_of(url: str) -> str | None:
    return httpx.get(f"{url}/v1/adapter").json()["version"]


def replace_adapter(folder: Path, source: Path) -> None:
    """As a user (or a training job) would: copy the files over the old ones."""
    for file in source.iterdir():
        shutil.copy(file, folder / file.name)


class Load:
    """Clients asking in a loop until stopped; every answer is kept."""

    def __init__(self, url: str, clients: int, model: str | None = None) -> None:
        self.url = url
        self.body = {**PROMPT, "model": model} if model is not None else PROMPT
        self.results: list[tuple[float, int, str, str]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        self._lock = threading.Lock()

    def _run(self) -> None:
        with httpx.Client(timeout=60) as http:
            while not self._stop.is_set():
                try:
                    response = http.post(f"{self.url}/v1/chat/completions", json=self.body)
                    record = (
                        time.monotonic(),
                        response.status_code,
                        response.headers.get("x-adapter-version", ""),
                        response.json()["choices"][0]["message"]["content"] if response.status_code == 200 else response.text,
                    )
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append(repr(exc))
                    continue
                with self._lock:
                    self.results.append(record)

    def answered(self, version: str) -> int:
        with self._lock:
            return sum(1 for _, status, v, _ in self.results if status == 200 and v == version)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def test_a_new_adapter_is_swapped_in_under_load_with_no_failed_request(serve_app, tiny_share):
    app = serve_app(tiny_share)
    first_version = version_of(app.url)
    first_text = ask(app.url).json()["choices"][0]["message"]["content"]
    with Load(app.url, clients=6) as load:
        eventually(lambda: len(load.results) >= 6, what="answers from the first adapter under load")
        replace_adapter(tiny_share / ADAPTER_PATH, tiny_share / SECOND_ADAPTER_PATH)
        second_version = eventually(lambda: (v := version_of(app.url)) != first_version and v, what="the new adapter")
        eventually(lambda: load.answered(second_version) >= 6, what="answers from the new adapter under load")
    second_text = ask(app.url).json()["choices"][0]["message"]["content"]
    assert load.errors == []
    assert load.results and all(status == 200 for _, status, _, _ in load.results)
    versions = [version for _, _, version, _ in sorted(load.results)]
    assert set(versions) == {first_version, second_version}
    # Once the new version answers, the old one only finishes what it had started.
    last_old = max(i for i, v in enumerate(versions) if v == first_version)
    assert versions.count(first_version) > 3 and versions[last_old + 1 :].count(first_version) == 0
    assert versions[-1] == second_version
    # The outputs switched to the new adapter's.
    assert first_text != second_text
    texts = {version: Counter(text for _, _, v, text in load.results if v == version) for version in versions}
    assert texts[first_version].most_common(1)[0][0] == first_text
    assert texts[second_version].most_common(1)[0][0] == second_text
    # The old version was unloaded once drained.
    eventually(lambda: httpx.get(f"{app.url}/v1/adapter").json()["draining"] == [], what="the old version to drain")
    assert list(app.engine.peft.peft_config) == [app.engine.registry.active.peft_name]


def test_a_half_written_adapter_is_never_served(serve_app, tiny_share):
    app = serve_app(tiny_share)
    first = version_of(app.url)
    folder, source = tiny_share / ADAPTER_PATH, tiny_share / SECOND_ADAPTER_PATH
    weights = (source / "adapter_model.safetensors").read_bytes()
    shutil.copy(source / "adapter_config.json", folder / "adapter_config.json")
    (folder / "adapter_model.safetensors").write_bytes(weights[: len(weights) // 2])
    error = eventually(lambda: httpx.get(f"{app.url}/v1/adapter").json()["last_error"], what="the refusal")
    assert "truncated" in error and str(folder) in error
    response = ask(app.url)
    assert response.status_code == 200 and response.headers["x-adapter-version"] == first
    # The copy completes: now it is served.
    (folder / "adapter_model.safetensors").write_bytes(weights)
    second = eventually(lambda: (v := version_of(app.url)) != first and v, what="the completed adapter")
    assert ask(app.url).headers["x-adapter-version"] == second
    assert httpx.get(f"{app.url}/v1/adapter").json()["last_error"] is None


@pytest.mark.parametrize(
    ("breakage", "words"),
    [
        ("config_garbage", "does not parse as JSON"),
        ("not_lora", "only LORA adapters are served"),
        ("other_base_by_name", "was trained for 'microsoft/Phi-3-mini-4k-instruct'"),
        ("other_base_by_shape", "does not fit this model"),
        ("unknown_target", "targets modules this model does not have"),
    ],
)
def test_a_broken_adapter_is_refused_and_the_old_one_keeps_serving(serve_app, tiny_share, tmp_path, breakage, words):
    app = serve_app(tiny_share, admin_token="t")
    first = version_of(app.url)
    folder = tiny_share / ADAPTER_PATH
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    if breakage == "config_garbage":
        config_file.write_text("{not json")
    elif breakage == "not_lora":
        config_file.write_text(json.dumps({**config, "peft_type": "PREFIX_TUNING"}))
    elif breakage == "other_base_by_name":
        config_file.write_text(json.dumps({**config, "base_model_name_or_path": "microsoft/Phi-3-mini-4k-instruct"}))
    elif breakage == "unknown_target":
        config_file.write_text(json.dumps({**config, "target_modules": ["q_proj", "w_pack"]}))
    else:  # same name, different architecture: a model twice as wide
        other = tmp_path / "wide-model"
        write_tiny_model(other, hidden_size=128)
        write_random_adapter(other, tmp_path / "wide-adapter", seed=5)
        replace_adapter(folder, tmp_path / "wide-adapter")
    result = httpx.post(f"{app.url}/admin/adapter/reload", headers={"authorization": "Bearer t"}, timeout=60)
    assert result.status_code == 422
    assert words in result.json()["message"] and f"still serving {first}" in result.json()["message"]
    info = httpx.get(f"{app.url}/v1/adapter").json()
    assert info["version"] == first and words in info["last_error"]
    response = ask(app.url)
    assert response.status_code == 200 and response.headers["x-adapter-version"] == first


def test_a_request_keeps_the_adapter_it_was_admitted_with(serve_app, tiny_share):
    app = serve_app(tiny_share, admin_token="t")
    first = version_of(app.url)
    long = {"prompt": "Hello", "max_tokens": 1000, "min_tokens": 1000, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{app.url}/v1/completions", json=long, timeout=120) as stream:
        lines = stream.iter_lines()
        first_chunk = json.loads(next(line for line in lines if line)[6:])
        assert first_chunk["system_fingerprint"] == f"lp-{first}"
        replace_adapter(tiny_share / ADAPTER_PATH, tiny_share / SECOND_ADAPTER_PATH)
        reload = httpx.post(f"{app.url}/admin/adapter/reload", headers={"authorization": "Bearer t"}, timeout=60).json()
        assert reload["status"] == "loaded"
        second = reload["version"]
        # The new adapter is what new requests get, while the old one drains.
        info = httpx.get(f"{app.url}/v1/adapter").json()
        assert (info["version"], info["draining"]) == (second, [first])
        assert ask(app.url).headers["x-adapter-version"] == second
        rest = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert {chunk["system_fingerprint"] for chunk in rest} == {f"lp-{first}"}
    assert sum(len(c["choices"][0]["text"]) for c in rest if c["choices"]) > 0
    eventually(lambda: httpx.get(f"{app.url}/v1/adapter").json()["draining"] == [], what="the old adapter to drain")
    eventually(lambda: list(app.engine.peft.peft_config) == [app.engine.registry.active.peft_name], what="unload")


def write_pointer(pointer: Path, document: dict) -> None:
    """As the reconciler writes it: whole or not at all."""
    scratch = pointer.with_suffix(".tmp")
    scratch.write_text(json.dumps(document))
    os.replace(scratch, pointer)


def test_the_pointer_file_decides_which_version_is_served(serve_app, tiny_share):
    pointer = tiny_share / ".loraplane/support-bot/current.json"
    pointer.parent.mkdir(parents=True, exist_ok=True)  # the app's own report may be there already
    write_pointer(pointer, {"version": "v1", "path": ADAPTER_PATH})
    app = serve_app(tiny_share, adapter_pointer=".loraplane/support-bot/current.json")
    assert version_of(app.url) == "v1"
    write_pointer(pointer, {"version": "v2", "path": SECOND_ADAPTER_PATH})
    eventually(lambda: version_of(app.url) == "v2", what="v2")
    assert ask(app.url).headers["x-adapter-version"] == "v2"
    write_pointer(pointer, {"version": "v3", "path": "../../etc"})
    error = eventually(lambda: httpx.get(f"{app.url}/v1/adapter").json()["last_error"], what="the refusal")
    assert "outside the share root" in error and version_of(app.url) == "v2"
    write_pointer(pointer, {"version": "v4", "path": "models/missing"})
    eventually(lambda: "no adapter folder" in (httpx.get(f"{app.url}/v1/adapter").json()["last_error"] or ""), what="refusal")
    assert version_of(app.url) == "v2"


def test_a_pointer_caught_half_written_is_not_refused(serve_app, tiny_share):
    pointer = tiny_share / ".loraplane/support-bot/current.json"
    pointer.parent.mkdir(parents=True, exist_ok=True)  # the app's own report may be there already
    write_pointer(pointer, {"version": "v1", "path": ADAPTER_PATH})
    app = serve_app(tiny_share, adapter_pointer=".loraplane/support-bot/current.json", watch_interval_seconds=60)
    watcher = app.app.state.watcher
    pointer.write_text('{"version": "v2", "pa')  # a writer that is not atomic, caught midway
    assert watcher.poll().status == "waiting"
    assert httpx.get(f"{app.url}/v1/adapter").json()["last_error"] is None
    write_pointer(pointer, {"version": "v2", "path": SECOND_ADAPTER_PATH})
    assert watcher.poll().status == "loaded"
    assert version_of(app.url) == "v2"
    # A pointer that stays broken is refused, and v2 keeps serving.
    pointer.write_text("{broken")
    assert watcher.poll().status == "waiting"
    assert watcher.poll().status == "refused"
    assert "cannot be read" in httpx.get(f"{app.url}/v1/adapter").json()["last_error"]
    assert ask(app.url).headers["x-adapter-version"] == "v2"


def test_concurrent_requests_share_batches(serve_app, tiny_share):
    app = serve_app(tiny_share, batch_wait_ms=50)
    results: list[int] = []

    def one() -> None:
        results.append(ask(app.url, max_tokens=8).status_code)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 8
    metrics = httpx.get(f"{app.url}/metrics").text

    def value(name: str) -> float:
        return next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name + " "))

    # Rows per forward pass, on average more than one: the requests shared the passes.
    rows, passes = value("loraplane_serving_batch_size_sum"), value("loraplane_serving_batch_size_count")
    assert passes < rows


def test_before_the_first_pointer_nothing_is_served(serve_app, tiny_share):
    """Before: the app served the adapter folder itself, as a version (sha-...) that loraplane's
    history did not know and could not roll back to."""
    app = serve_app(tiny_share, adapter_pointer=".loraplane/support-bot/current.json", ready=False)
    eventually(lambda: app.engine.base is not None, what="the model to load")
    ready = httpx.get(f"{app.url}/readyz")
    assert ready.status_code == 503 and "waiting for loraplane to stage the first adapter version" in ready.json()["detail"]
    assert ask(app.url).status_code == 503 and version_of(app.url) is None
    pointer = tiny_share / ".loraplane/support-bot/current.json"
    pointer.parent.mkdir(parents=True, exist_ok=True)  # the app's own report may be there already
    write_pointer(pointer, {"version": "v2", "path": SECOND_ADAPTER_PATH})
    eventually(lambda: version_of(app.url) == "v2", what="the pointer's version")
    assert ask(app.url).headers["x-adapter-version"] == "v2"
