"""What a stranger can make the serving app do: links out of the share are not followed, text
that is no text is refused, and what a request may bring is bounded before it costs anything."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import httpx

from serving.tiny import ADAPTER_PATH, TINY_MODEL_PATH
from tests.fakes import eventually

CHAT = "/v1/chat/completions"


def test_an_adapter_folder_linked_from_outside_the_share_is_not_served(serve_app, tiny_share: Path, tmp_path: Path):
    outside = tmp_path / "elsewhere" / "adapter"
    shutil.copytree(tiny_share / ADAPTER_PATH, outside)
    shutil.rmtree(tiny_share / ADAPTER_PATH)
    (tiny_share / ADAPTER_PATH).symlink_to(outside, target_is_directory=True)
    app = serve_app(tiny_share, ready=False)
    with app.client() as client:
        answer = _eventually_refused(client)
        assert answer["version"] is None
        assert "outside the share root" in answer["last_error"]
        assert client.get("/readyz").status_code == 503
        assert client.post(CHAT, json={"messages": [{"role": "user", "content": "Hi"}]}).status_code == 503


def test_an_adapter_file_linked_from_outside_the_share_is_not_read(serve_app, tiny_share: Path, tmp_path: Path):
    weights = tiny_share / ADAPTER_PATH / "adapter_model.safetensors"
    outside = tmp_path / "secret.safetensors"
    shutil.move(weights, outside)
    weights.symlink_to(outside)
    app = serve_app(tiny_share, ready=False)
    with app.client() as client:
        assert "outside the share root" in _eventually_refused(client)["last_error"]


def _eventually_refused(client: httpx.Client) -> dict:
    def refused() -> dict | None:
        answer = client.get("/v1/adapter").json()
        return answer if answer.get("last_error") else None

    return eventually(refused, timeout=120, what="the app to refuse the adapter")


def test_a_lone_surrogate_is_a_400_and_the_connection_stays(serve_app, tiny_share: Path):
    app = serve_app(tiny_share)
    # Sent as raw bytes: a JSON escape for half of a UTF-16 pair, which no UTF-8 can hold.
    body = b'{"messages": [{"role": "user", "content": "hi \\ud800 there"}], "max_tokens": 2}'
    with app.client() as client:
        first = client.post(CHAT, content=body, headers={"content-type": "application/json"})
        assert first.status_code == 400, first.text
        assert "lone surrogate" in first.json()["error"]["message"]
        again = client.post(
            "/v1/completions", content=b'{"prompt": "\\udfff", "max_tokens": 2}', headers={"content-type": "application/json"}
        )
        assert again.status_code == 400
        assert client.get("/healthz").status_code == 200  # the same connection, still open


def test_a_prompt_too_large_is_refused_before_it_is_tokenized(serve_app, tiny_share: Path):
    app = serve_app(tiny_share, max_prompt_bytes=1000, max_request_bytes=64 * 1024)
    with app.client() as client:
        refused = client.post(CHAT, json={"messages": [{"role": "user", "content": "x" * 1001}]})
        assert refused.status_code == 400
        assert "1001 bytes" in refused.json()["error"]["message"] and "LORAPLANE_MAX_PROMPT_BYTES" in refused.json()["error"]["message"]
        assert client.post("/v1/completions", json={"prompt": "é" * 501}).status_code == 400  # bytes, not characters
        assert client.post(CHAT, json={"messages": [{"role": "user", "content": "x" * 900}], "max_tokens": 1}).status_code == 200


def test_a_body_past_the_cap_is_413_whether_it_declares_its_length_or_not(serve_app, tiny_share: Path):
    app = serve_app(tiny_share, max_request_bytes=4096)
    big = b'{"prompt": "' + b"x" * 10_000 + b'"}'
    with app.client() as client:
        declared = client.post("/v1/completions", content=big, headers={"content-type": "application/json"})
        assert declared.status_code == 413
        assert "LORAPLANE_MAX_REQUEST_BYTES" in declared.json()["error"]["message"]

        def chunks():
            for start in range(0, len(big), 1000):
                yield big[start : start + 1000]

        chunked = client.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"})
        assert chunked.status_code == 413
    # A client that says it will send 100 MB is answered at once, with nothing read.
    host, port = app.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        raw.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n")
        assert raw.recv(4096).startswith(b"HTTP/1.1 413")


def test_the_model_folder_must_be_inside_the_share(serve_app, tiny_share: Path, tmp_path: Path):
    outside = tmp_path / "models-elsewhere"
    shutil.move(tiny_share / TINY_MODEL_PATH, outside)
    (tiny_share / TINY_MODEL_PATH).symlink_to(outside, target_is_directory=True)
    app = serve_app(tiny_share, ready=False)

    def not_ready_because() -> str | None:
        answer = httpx.get(f"{app.url}/readyz", timeout=5)
        return answer.json()["detail"] if answer.status_code == 503 and "outside the share root" in answer.text else None

    detail = eventually(not_ready_because, timeout=60, what="readyz to say why the model is not loaded")
    assert str(tiny_share / TINY_MODEL_PATH) in detail  # named as the settings name it, not where it leads
